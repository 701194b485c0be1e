//! Which kernel a guest boots: `--kernel SPEC` parsing, and a kernel on disk (image, release,
//! modules tree).

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("bad --kernel {spec:?}: {reason}")]
    BadSpec { spec: String, reason: String },
    #[error("failed to read kernel image {path}")]
    Image {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a kernel image qemu can boot: {why}")]
    NotKernel { path: PathBuf, why: String },
    #[error("no modules directory for kernel {release}: looked in {looked}; pass it as IMAGE:MODULES_DIR")]
    NoModules { release: String, looked: String },
}

/// What `--kernel` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// A series (`6.1`, `6.12`) of Debian's cloud kernel flavour, fetched into the cache.
    Debian { series: String },
    /// A kernel image on disk and, optionally, its modules directory
    /// (`.../lib/modules/<release>`).
    Path {
        image: PathBuf,
        modules: Option<PathBuf>,
    },
}

impl KernelSpec {
    /// `debian:6.1`, `debian:6.12`, `/boot/vmlinuz-X` or `/path/vmlinuz:/path/lib/modules/X`.
    /// `host` is not a VM kernel: the caller maps it to the namespace backend first.
    pub fn parse(spec: &str) -> Result<KernelSpec, KernelError> {
        let bad = |reason: &str| KernelError::BadSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        if let Some(series) = spec.strip_prefix("debian:") {
            let ok = !series.is_empty()
                && series.split('.').count() == 2
                && series.split('.').all(|p| p.parse::<u32>().is_ok());
            if !ok {
                return Err(bad("expected debian:MAJOR.MINOR, e.g. debian:6.1"));
            }
            return Ok(KernelSpec::Debian {
                series: series.to_string(),
            });
        }
        if spec == "host" {
            return Err(bad("`host` runs on the host kernel, not in a VM"));
        }
        let (image, modules) = match spec.split_once(':') {
            Some((i, m)) => (PathBuf::from(i), Some(PathBuf::from(m))),
            None => (PathBuf::from(spec), None),
        };
        if !image.is_file() {
            return Err(bad(
                "not debian:MAJOR.MINOR and not a kernel image file (IMAGE[:MODULES_DIR])",
            ));
        }
        if let Some(m) = &modules {
            if !m.is_dir() {
                return Err(bad("the modules directory after ':' does not exist"));
            }
        }
        Ok(KernelSpec::Path { image, modules })
    }

    /// Whether this kernel can boot, found out before anything boots: a series the apt
    /// lists offer, or an image qemu boots directly whose modules are found. `Err` says what
    /// is wrong in one line and names the Debian kernels on offer.
    pub fn check_usable(&self) -> Result<(), KernelError> {
        let bad = |reason: String| KernelError::BadSpec {
            spec: self.to_string(),
            reason,
        };
        match self {
            KernelSpec::Debian { series } => crate::fetch::resolve_package(series)
                .map(|_| ())
                .map_err(|e| bad(faultline_sys::error_chain(&e))),
            KernelSpec::Path { image, modules } => {
                GuestKernel::from_path(image, modules.as_deref())
                    .map(|_| ())
                    .map_err(|e| {
                        let offered = crate::fetch::offered_series()
                            .ok()
                            .filter(|o| !o.is_empty())
                            .map(|o| format!("; or use {}", crate::fetch::describe(&o)))
                            .unwrap_or_default();
                        bad(format!("{}{offered}", faultline_sys::error_chain(&e)))
                    })
            }
        }
    }

    /// A short name for directories and matrix columns.
    pub fn label(&self) -> String {
        match self {
            KernelSpec::Debian { series } => format!("debian-{series}"),
            KernelSpec::Path { image, .. } => image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "kernel".into()),
        }
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSpec::Debian { series } => write!(f, "debian:{series}"),
            KernelSpec::Path { image, .. } => write!(f, "{}", image.display()),
        }
    }
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    pub image: PathBuf,
    /// `uname -r` of the guest, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// `lib/modules/<release>`.
    pub modules: PathBuf,
}

impl GuestKernel {
    /// A kernel image on disk; the modules directory is found next to it when not given.
    pub fn from_path(image: &Path, modules: Option<&Path>) -> Result<GuestKernel, KernelError> {
        let bytes = std::fs::read(image).map_err(|source| KernelError::Image {
            path: image.to_path_buf(),
            source,
        })?;
        let release = image_release(&bytes).map_err(|why| KernelError::NotKernel {
            path: image.to_path_buf(),
            why,
        })?;
        let modules = match modules {
            Some(m) => m.to_path_buf(),
            None => {
                let beside = image
                    .parent()
                    .and_then(Path::parent)
                    .map(|root| root.join("lib/modules").join(&release));
                let system = PathBuf::from("/lib/modules").join(&release);
                let candidates: Vec<PathBuf> = beside.into_iter().chain([system]).collect();
                match candidates.iter().find(|c| c.is_dir()) {
                    Some(c) => c.clone(),
                    None => {
                        return Err(KernelError::NoModules {
                            release,
                            looked: candidates
                                .iter()
                                .map(|c| c.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                }
            }
        };
        Ok(GuestKernel {
            image: image.to_path_buf(),
            release,
            modules,
        })
    }
}

/// The release of a kernel image qemu boots directly: an x86 bzImage (boot protocol header
/// "HdrS" at 0x202), or an x86-64 ELF vmlinux with the PVH entry note, which qemu needs to
/// boot an uncompressed kernel (Linux `CONFIG_PVH`; qemu hw/i386/x86.c
/// "Error loading uncompressed kernel without PVH ELF Note"). `Err(why not)`.
pub fn image_release(image: &[u8]) -> Result<String, String> {
    if image.get(0x202..0x206) == Some(b"HdrS") {
        return bzimage_release(image)
            .ok_or_else(|| "a bzImage without a kernel version string".to_string());
    }
    if image.starts_with(b"\x7fELF") {
        if !elf::is_x86_64(image) {
            return Err("an ELF file, but not a 64-bit x86 one".into());
        }
        if !elf::has_pvh_note(image) {
            return Err("an ELF vmlinux without the PVH entry note (build with CONFIG_PVH=y, or pass the bzImage)".into());
        }
        return banner_release(image)
            .ok_or_else(|| "an ELF vmlinux without a \"Linux version\" banner".into());
    }
    Err("neither a bzImage (no \"HdrS\" at 0x202) nor an ELF vmlinux".into())
}

/// The release in `linux_banner` ("Linux version 6.1.0-56-cloud-amd64 (builder) #1 ...").
fn banner_release(image: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    image
        .windows(BANNER.len())
        .enumerate()
        .filter(|(_, w)| *w == BANNER)
        .find_map(|(i, _)| {
            let rest = &image[i + BANNER.len()..];
            let end = rest.iter().take(256).position(|b| *b == b' ' || *b == 0)?;
            let release = std::str::from_utf8(&rest[..end]).ok()?;
            release
                .starts_with(|c: char| c.is_ascii_digit())
                .then(|| release.to_string())
        })
}

mod elf {
    use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
    use object::Endianness;

    /// A 64-bit ELF for EM_X86_64.
    pub fn is_x86_64(b: &[u8]) -> bool {
        ElfFile64::<Endianness>::parse(b)
            .is_ok_and(|f| f.elf_header().e_machine(f.endian()) == object::elf::EM_X86_64)
    }

    /// Whether a PT_NOTE segment holds the note "Xen" of type XEN_ELFNOTE_PHYS32_ENTRY (18),
    /// the PVH entry point (Linux arch/x86/platform/pvh/head.S).
    pub fn has_pvh_note(b: &[u8]) -> bool {
        let Ok(file) = ElfFile64::<Endianness>::parse(b) else {
            return false;
        };
        let endian = file.endian();
        file.elf_program_headers().iter().any(|ph| {
            let Ok(Some(mut notes)) = ph.notes(endian, b) else {
                return false;
            };
            while let Ok(Some(note)) = notes.next() {
                if note.name() == b"Xen" && note.n_type(endian) == 18 {
                    return true;
                }
            }
            false
        })
    }
}

/// The release string an x86 bzImage carries: the boot protocol's `kernel_version` field
/// (offset 0x20E) points, relative to 0x200, at "6.1.0-56-cloud-amd64 (builder) #1 SMP ...".
pub fn bzimage_release(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20E)?, *image.get(0x20F)?]) as usize;
    let start = ptr + 0x200;
    let rest = image.get(start..)?;
    let end = rest.iter().position(|b| *b == 0 || *b == b' ')?;
    let release = std::str::from_utf8(&rest[..end]).ok()?;
    (!release.is_empty()).then(|| release.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            KernelSpec::parse("debian:6.12").unwrap(),
            KernelSpec::Debian {
                series: "6.12".into()
            }
        );
        assert_eq!(
            KernelSpec::parse("debian:6.1").unwrap().label(),
            "debian-6.1"
        );
        for bad in [
            "debian:",
            "debian:6",
            "debian:6.x",
            "host",
            "/nonexistent/vmlinuz",
        ] {
            let e = KernelSpec::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("bad --kernel"), "{e}");
        }
    }

    #[test]
    fn reads_release_from_bzimage_header() {
        // The first bytes that matter of a bzImage: "HdrS" at 0x202, kernel_version at
        // 0x20E pointing (relative to 0x200) at the version string.
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let s = b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        img[0x300..0x300 + s.len()].copy_from_slice(s);
        assert_eq!(
            bzimage_release(&img).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(bzimage_release(&[0u8; 0x300]), None);
        assert_eq!(image_release(&img).unwrap(), "6.1.0-56-cloud-amd64");
    }

    /// A minimal x86-64 ELF with one PT_NOTE segment holding `note` (name, type) and a
    /// linux_banner.
    fn elf(note: (&[u8], u32)) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little-endian
        b[6] = 1; // EV_CURRENT
        b[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 0x40;
        b[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        b[ph + 8..ph + 16].copy_from_slice(&0x100u64.to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&0x20u64.to_le_bytes());
        let (name, kind) = note;
        let n = 0x100;
        b[n..n + 4].copy_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        b[n + 4..n + 8].copy_from_slice(&4u32.to_le_bytes());
        b[n + 8..n + 12].copy_from_slice(&kind.to_le_bytes());
        b[n + 12..n + 12 + name.len()].copy_from_slice(name);
        let banner = b"Linux version 6.13.2-test (me@here) #1 SMP\0";
        b[0x200..0x200 + banner.len()].copy_from_slice(banner);
        b
    }

    #[test]
    fn tells_kernel_images_from_other_files() {
        assert_eq!(image_release(&elf((b"Xen", 18))).unwrap(), "6.13.2-test");
        let no_pvh = image_release(&elf((b"GNU", 3))).unwrap_err();
        assert!(no_pvh.contains("PVH"), "{no_pvh}");
        let mut i386 = elf((b"Xen", 18));
        i386[4] = 1;
        assert!(image_release(&i386).unwrap_err().contains("64-bit x86"));
        let passwd = b"root:x:0:0:root:/root:/bin/bash\n".repeat(40);
        let e = image_release(&passwd).unwrap_err();
        assert!(e.contains("neither a bzImage"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, &passwd).unwrap();
        let spec = KernelSpec::parse(path.to_str().unwrap()).unwrap();
        let e = spec.check_usable().unwrap_err().to_string();
        assert!(
            e.starts_with("bad --kernel") && e.contains("not a kernel image"),
            "{e}"
        );
    }
}
