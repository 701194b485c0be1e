//! `faultline image --output FILE`: the faultline OCI image, built from the running binary
//! with no registry or Docker daemon: `/usr/local/bin/faultline` (debug information
//! removed) with the shared libraries it loads at their paths, on a busybox-static root
//! (`/bin/busybox` and its applets, for the DaemonSet's init container's `cp`). Written as
//! an OCI image-layout tarball (image-spec `image-layout.md`), which `ctr images import`
//! and `skopeo copy oci-archive:FILE ...` read.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use faultline_runtime::image::{Content, Image, ImageBuilder, BUSYBOX_APPLETS};
use faultline_sys::error_chain;
use faultline_sys::executable::{copy_running_executable, shared_libraries};

use crate::{fail_usage, UsageError};

/// Where the binary sits in the image (the DaemonSet's init container copies it from here).
pub const BINARY: &str = "/usr/local/bin/faultline";
/// The image's name: a registry host of its own (`.local`), so that it never resolves to an
/// image on Docker Hub.
pub const REPOSITORY: &str = "faultline.local/faultline";

#[derive(clap::Args)]
#[command(
    after_help = "Exit code: 0 when the image was written, 2 when it could not be (the reason on one line of stderr)."
)]
pub struct Args {
    /// The OCI image-layout tarball to write (replaced if it exists; written to a temporary
    /// file beside it and renamed into place).
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
}

/// `faultline.local/faultline:VERSION`.
pub fn reference() -> String {
    format!("{REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

pub fn run(args: Args) -> Result<ExitCode, UsageError> {
    let partial = writable_output(&args.output).map_err(UsageError)?;
    let result = build_and_write(&partial, &args.output);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The temporary file beside `output` the image is written to, created now: a missing or
/// unwritable directory is reported before anything is built.
fn writable_output(output: &Path) -> Result<PathBuf, String> {
    let shown = output.display();
    if output.is_dir() {
        return Err(format!("--output {shown} is a directory; name a file"));
    }
    let name = output
        .file_name()
        .ok_or_else(|| format!("--output {shown} names no file"))?;
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "--output {shown}: the directory {} does not exist",
            dir.display()
        ));
    }
    let partial = dir.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| format!("--output {shown}: cannot write in {}: {e}", dir.display()))?;
    Ok(partial)
}

fn build_and_write(partial: &Path, output: &Path) -> Result<ExitCode, UsageError> {
    let name = reference();
    let fail = |what: &str, e: &dyn std::error::Error| {
        UsageError(format!("failed to {what}: {}", error_chain(e)))
    };
    let Some(busybox) = faultline_sys::path::find_on_path("busybox") else {
        return fail_usage("busybox is not installed (apt-get install busybox-static)");
    };
    let tmp = tempfile::Builder::new()
        .prefix("faultline-image-")
        .tempdir()
        .map_err(|e| fail("make a temporary directory", &e))?;
    let binary = tmp.path().join("faultline");
    copy_running_executable(&binary).map_err(|e| fail("copy the faultline binary", &e))?;
    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    let mut libraries =
        shared_libraries(&binary).map_err(|e| fail("list faultline's libraries", &e))?;
    libraries.extend(shared_libraries(&busybox).map_err(|e| fail("list busybox's libraries", &e))?);
    libraries.sort();
    libraries.dedup();
    let applets = applets(&busybox);
    eprintln!(
        "faultline: building {name}: faultline ({:.1} MiB) at {BINARY}, {} shared libraries, {} ({} applets)",
        size as f64 / (1 << 20) as f64,
        libraries.len(),
        busybox.display(),
        applets.len(),
    );
    let image = image(&name, &binary, (&busybox, &applets), &libraries)
        .build()
        .map_err(|e| fail("build the image", &e))?;
    image
        .write_layout(partial)
        .map_err(|e| fail("write the image", &e))?;
    std::fs::rename(partial, output).map_err(|e| {
        UsageError(format!(
            "failed to rename {} to {}: {e}",
            partial.display(),
            output.display()
        ))
    })?;
    eprintln!(
        "faultline: wrote {} ({:.1} MiB, manifest {})",
        output.display(),
        layout_size(&image) as f64 / (1 << 20) as f64,
        image.manifest.digest
    );
    println!("{name}");
    Ok(ExitCode::SUCCESS)
}

/// The image's entries: busybox's root, every applet `busybox --list` names, faultline at
/// [`BINARY`] (and on PATH as `/bin/faultline`), each library at its host path.
fn image(
    name: &str,
    binary: &Path,
    (busybox, applets): (&Path, &[String]),
    libraries: &[PathBuf],
) -> ImageBuilder {
    let mut b = ImageBuilder::busybox(name, busybox);
    for applet in applets {
        if applet != "busybox" && !BUSYBOX_APPLETS.contains(&applet.as_str()) {
            b = b.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    b = b
        .file(BINARY, Content::File(binary.to_path_buf()), 0o755)
        .symlink("bin/faultline", "../usr/local/bin/faultline");
    for lib in libraries {
        let mode = std::fs::metadata(lib)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        b = b.file(
            &lib.to_string_lossy(),
            Content::File(lib.to_path_buf()),
            mode,
        );
    }
    b.entrypoint(&[BINARY])
}

/// The applets `busybox --list` prints (none if it cannot run).
fn applets(busybox: &Path) -> Vec<String> {
    Command::new(busybox)
        .arg("--list")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.is_empty() && !l.contains('/'))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn layout_size(image: &Image) -> usize {
    [&image.config, &image.layer, &image.manifest]
        .iter()
        .map(|b| b.data.len())
        .sum()
}
