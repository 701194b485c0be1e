//! Where the kernel log comes from, read as a stream: a capture (a file, a pipe, process
//! substitution, `-` for standard input) line by line, or the live /dev/kmsg record by
//! record. Memory stays flat whatever the size: one line at a time, each cut at
//! [`MAX_LINE`].

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Longest line kept whole; the rest of a longer one is skipped. The kernel formats a record
/// into at most 8 KiB (CONSOLE_EXT_LOG_MAX), and journalctl's prefix adds little to that.
pub const MAX_LINE: u64 = 64 * 1024;

/// `--kmsg-file -` reads standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Whether `path` names something other than a regular file (standard input, a pipe, a
/// terminal, /dev/null): what can be read once only.
pub fn is_stream(path: &Path) -> bool {
    is_stdin(path) || std::fs::metadata(path).is_ok_and(|m| !m.file_type().is_file())
}

/// What is wrong with `path` as `--kmsg-file`, said plainly, checked before anything runs.
/// Empty input is fine (no lines); pipes, FIFOs and character devices are read as streams.
pub fn check_capture_path(path: &Path) -> Result<(), String> {
    if is_stdin(path) {
        return Ok(());
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "not found (no such file or directory)".to_string(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (cannot reach it through its directories)".to_string()
        }
        _ => e.to_string(),
    })?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(
            "is a directory; name a saved kernel log (dmesg > FILE) or - for standard input".into(),
        );
    }
    if ft.is_block_device() {
        return Err("is a block device, not a kernel log".into());
    }
    // access(2) rather than open(2): opening a FIFO blocks until a writer comes.
    nix::unistd::access(path, nix::unistd::AccessFlags::R_OK).map_err(|e| match e {
        nix::errno::Errno::EACCES => "permission denied (not readable)".to_string(),
        e => e.desc().to_string(),
    })
}

/// Opens a capture for reading: standard input for `-`, else the path (a FIFO or
/// `/dev/fd/N` from process substitution opens like a file).
pub fn open_capture(path: &Path) -> io::Result<Box<dyn Read>> {
    if is_stdin(path) {
        return Ok(Box::new(io::stdin().lock()));
    }
    Ok(Box::new(File::open(path)?))
}

/// Calls `f` with each line of `reader` (without its line ending; invalid UTF-8 replaced),
/// one buffer reused for all, lines longer than [`MAX_LINE`] cut there. `f` may stop the
/// reading with an error.
pub fn for_each_line<E: From<io::Error>>(
    reader: impl Read,
    mut f: impl FnMut(&str) -> Result<(), E>,
) -> Result<(), E> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let n = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf.last() != Some(&b'\n') && n as u64 == MAX_LINE {
            skip_rest_of_line(&mut reader)?;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        f(&String::from_utf8_lossy(&buf))?;
    }
}

fn skip_rest_of_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

/// A stream copied to an unnamed temporary file so that more than one detector can read it:
/// keep the returned file open while they run, and hand them [`Spool::path`].
pub struct Spool {
    file: File,
}

impl Spool {
    /// Copies the stream at `path` (`-`: standard input) into an `O_TMPFILE` file in the
    /// temporary directory: it has no name and goes away with the process, whatever happens.
    pub fn copy(path: &Path) -> io::Result<Spool> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(std::env::temp_dir())?;
        io::copy(&mut open_capture(path)?, &mut file)?;
        Ok(Spool { file })
    }

    /// A path that opens the copy afresh, from its start.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for_each_line(input, |l| {
            out.push(l.to_string());
            Ok::<_, io::Error>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn splits_lines_and_bounds_them() {
        assert_eq!(lines(b"a\r\nb\n\nc"), ["a", "b", "", "c"]);
        assert!(lines(b"").is_empty());
        let long = [vec![b'x'; 3 * MAX_LINE as usize], b"\nnext\n".to_vec()].concat();
        let got = lines(&long);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE as usize);
        assert_eq!(got[1], "next");
        assert_eq!(lines(b"\xff ok\n"), ["\u{fffd} ok"]);
    }

    #[test]
    fn says_what_is_wrong_with_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = |p: &Path| check_capture_path(p).unwrap_err();
        assert!(err(dir.path()).starts_with("is a directory"));
        assert!(err(&dir.path().join("missing")).starts_with("not found"));
        assert_eq!(check_capture_path(Path::new("/dev/null")), Ok(()));
        assert_eq!(check_capture_path(Path::new("-")), Ok(()));
        assert!(is_stream(Path::new("/dev/null")) && is_stream(Path::new("-")));
        let file = dir.path().join("dmesg.txt");
        std::fs::write(&file, "x\n").unwrap();
        assert_eq!(check_capture_path(&file), Ok(()));
        assert!(!is_stream(&file));
    }

    #[test]
    fn reads_a_pipe_and_spools_it_for_more_than_one_reader() {
        let (fd, w) = nix::unistd::pipe().unwrap();
        File::from(w).write_all(b"one\ntwo\n").unwrap();
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        assert!(is_stream(&path));
        let spool = Spool::copy(&path).unwrap();
        for _ in 0..2 {
            let mut got = Vec::new();
            for_each_line(open_capture(&spool.path()).unwrap(), |l| {
                got.push(l.to_string());
                Ok::<_, io::Error>(())
            })
            .unwrap();
            assert_eq!(got, ["one", "two"]);
        }
    }
}
