//! Kernel modules for the guest: find a module by name in a kernel's modules tree, read its
//! own `depends=` from the `.modinfo` ELF section (Debian's packages ship no `modules.dep`;
//! depmod writes it at install time, and we never install), and order the closure so every
//! module comes after what it depends on. Compressed modules (`.ko.xz`, `.ko.zst`) are
//! decompressed here, because the guest loads them with a plain `finit_module`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("failed to read the modules tree {dir}")]
    Walk {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read module {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to decompress module {path}: {reason}")]
    Decompress { path: PathBuf, reason: String },
    #[error("failed to parse module {path} as ELF: {reason}")]
    Elf { path: PathBuf, reason: String },
    #[error("kernel module {name} is not in {dir} (needed by {needed_by})")]
    Missing {
        name: String,
        dir: PathBuf,
        needed_by: String,
    },
}

/// A module ready to load: its name and its uncompressed image.
#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    pub image: Vec<u8>,
    pub depends: Vec<String>,
}

/// Module names use `-` and `_` interchangeably (`nfs_acl` is `nfs_acl.ko`, the kernel also
/// accepts `nfs-acl`); compare them with dashes folded.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Every `*.ko`, `*.ko.xz`, `*.ko.zst` under `dir`, by canonical name.
pub fn index(dir: &Path) -> Result<BTreeMap<String, PathBuf>, ModuleError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| ModuleError::Walk {
            dir: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ModuleError::Walk {
                dir: d.clone(),
                source,
            })?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|source| ModuleError::Walk {
                dir: path.clone(),
                source,
            })?;
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = module_stem(&file) {
                out.insert(canonical(stem), path);
            }
        }
    }
    Ok(out)
}

fn module_stem(file: &str) -> Option<&str> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
}

/// The uncompressed bytes of a module file.
pub fn read_uncompressed(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let raw = std::fs::read(path).map_err(|source| ModuleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.to_string_lossy();
    let fail = |reason: String| ModuleError::Decompress {
        path: path.to_path_buf(),
        reason,
    };
    if name.ends_with(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out).map_err(|e| fail(e.to_string()))?;
        Ok(out)
    } else if name.ends_with(".zst") {
        let mut out = Vec::new();
        ruzstd::decoding::StreamingDecoder::new(raw.as_slice())
            .map_err(|e| fail(e.to_string()))?
            .read_to_end(&mut out)
            .map_err(|e| fail(e.to_string()))?;
        Ok(out)
    } else if name.ends_with(".gz") {
        Err(fail("gzip-compressed modules are not supported".into()))
    } else {
        Ok(raw)
    }
}

/// `key=value` pairs of the `.modinfo` section (NUL-separated strings).
pub fn modinfo(image: &[u8], path: &Path) -> Result<Vec<(String, String)>, ModuleError> {
    let file = object::File::parse(image).map_err(|e| ModuleError::Elf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let Some(section) = file.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let data = section.data().map_err(|e| ModuleError::Elf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(parse_modinfo(data))
}

pub fn parse_modinfo(data: &[u8]) -> Vec<(String, String)> {
    data.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = String::from_utf8_lossy(s);
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// What [`resolve`] found.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Every module to load, each after its dependencies.
    pub ordered: Vec<Module>,
    /// Wanted names this kernel has neither as a module nor built in (a file system that is
    /// built in under another name, or absent; the guest's requirement check decides).
    pub absent: Vec<String>,
}

/// `wanted` and everything they depend on. Names in `builtin` are skipped; a dependency
/// that is missing is an error (the modules tree is broken), a wanted name that is missing
/// is only recorded.
pub fn resolve(
    dir: &Path,
    wanted: &[&str],
    builtin: &BTreeSet<String>,
) -> Result<Resolved, ModuleError> {
    let files = index(dir)?;
    let mut ordered: Vec<Module> = Vec::new();
    let mut absent = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    for name in wanted {
        let name = canonical(name);
        if !files.contains_key(&name) && !builtin.contains(&name) {
            absent.push(name);
            continue;
        }
        visit(
            dir,
            &files,
            builtin,
            &name,
            "the scenario",
            &mut done,
            &mut ordered,
            &mut Vec::new(),
        )?;
    }
    Ok(Resolved { ordered, absent })
}

#[allow(clippy::too_many_arguments)]
fn visit(
    dir: &Path,
    files: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    name: &str,
    needed_by: &str,
    done: &mut BTreeSet<String>,
    ordered: &mut Vec<Module>,
    path: &mut Vec<String>,
) -> Result<(), ModuleError> {
    if done.contains(name) || path.iter().any(|p| p == name) {
        return Ok(());
    }
    let Some(file) = files.get(name) else {
        if builtin.contains(name) {
            done.insert(name.to_string());
            return Ok(());
        }
        return Err(ModuleError::Missing {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            needed_by: needed_by.to_string(),
        });
    };
    let image = read_uncompressed(file)?;
    let depends: Vec<String> = modinfo(&image, file)?
        .into_iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter(|d| !d.is_empty())
                .map(canonical)
                .collect::<Vec<_>>()
        })
        .collect();
    path.push(name.to_string());
    for dep in &depends {
        visit(dir, files, builtin, dep, name, done, ordered, path)?;
    }
    path.pop();
    done.insert(name.to_string());
    ordered.push(Module {
        name: name.to_string(),
        image,
        depends,
    });
    Ok(())
}

/// Names of modules built into a kernel, from its `modules.builtin` (shipped in the
/// package, unlike modules.dep).
pub fn builtin(modules_dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(modules_dir.join("modules.builtin"))
        .map(|t| {
            t.lines()
                .filter_map(|l| l.rsplit('/').next())
                .filter_map(module_stem)
                .map(canonical)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modinfo_of_lockd() {
        // The .modinfo section of Debian's 6.1.0-56-cloud-amd64 lockd.ko, as
        // `objcopy -O binary --only-section=.modinfo` printed it.
        let data = b"parmtype=nlm_max_connections:uint\0parmtype=nsm_use_hostnames:bool\0license=GPL\0description=NFS file locking service version 0.5.\0author=Olaf Kirch <okir@monad.swb.de>\0depends=sunrpc,grace\0retpoline=Y\0intree=Y\0name=lockd\0vermagic=6.1.0-56-cloud-amd64 SMP preempt mod_unload modversions \0";
        let info = parse_modinfo(data);
        let depends: Vec<_> = info.iter().filter(|(k, _)| k == "depends").collect();
        assert_eq!(depends, [&("depends".into(), "sunrpc,grace".into())]);
        assert!(info.iter().any(|(k, v)| k == "name" && v == "lockd"));
    }

    #[test]
    fn stems_and_names() {
        assert_eq!(module_stem("nfsd.ko.xz"), Some("nfsd"));
        assert_eq!(module_stem("nfs_acl.ko"), Some("nfs_acl"));
        assert_eq!(module_stem("modules.dep"), None);
        assert_eq!(canonical("nfs-acl"), "nfs_acl");
    }
}
