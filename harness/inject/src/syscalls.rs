//! x86_64 system call names and numbers, from the `syscalls` crate's table, which is
//! generated from the kernel's `arch/x86/entry/syscalls/syscall_64.tbl`, so every call the
//! kernel has (clock_nanosleep, rseq, io_uring_setup, epoll_pwait2, ...) has its name. The
//! x86_64 table is named explicitly: the tracer reads x86_64 registers (`orig_rax`). A number
//! can always be given instead of a name.

use syscalls::x86_64::Sysno;

/// The highest number accepted as a bare number: the x86_64 table plus room for calls newer
/// than the crate (the kernel's table has no gaps past a few hundred).
const MAX_NR: i64 = 1023;

/// The number of system call `name` (or a decimal number as text).
pub fn number(name: &str) -> Option<i64> {
    if let Ok(n) = name.parse::<i64>() {
        return (0..=MAX_NR).contains(&n).then_some(n);
    }
    // strace accepts `umount` for umount2 on x86_64, which has no plain umount.
    let name = if name == "umount" { "umount2" } else { name };
    name.parse::<Sysno>().ok().map(|s| i64::from(s.id()))
}

/// The name of system call `nr`, when the table has it.
pub fn name(nr: i64) -> Option<&'static str> {
    let nr = usize::try_from(nr).ok()?;
    Sysno::new(nr).map(|s| s.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_names_both_ways() {
        assert_eq!(number("umount2"), Some(166));
        assert_eq!(number("umount"), Some(166));
        assert_eq!(number("openat"), Some(257));
        assert_eq!(number("166"), Some(166));
        assert_eq!(number("no_such_call"), None);
        assert_eq!(number("-1"), None);
        assert_eq!(name(libc::SYS_mount), Some("mount"));
        assert_eq!(name(-1), None);
    }

    /// Calls the old hand-written table lacked; their numbers are libc's `SYS_*`.
    #[test]
    fn newer_calls_resolve() {
        for (n, nr) in [
            ("clock_nanosleep", libc::SYS_clock_nanosleep),
            ("rseq", libc::SYS_rseq),
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("epoll_pwait2", libc::SYS_epoll_pwait2),
            ("nanosleep", libc::SYS_nanosleep),
        ] {
            assert_eq!(number(n), Some(nr), "{n}");
            assert_eq!(name(nr), Some(n), "{n}");
        }
    }
}
