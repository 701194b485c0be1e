//! x86_64 system call names and numbers, from libc's `SYS_*` constants. A hand-made table
//! because no well-kept crate maps names to numbers for the kernel ABI without pulling in a
//! whole tracer; the list covers the file, mount, process and IPC calls a container runtime
//! makes. A number can always be given instead of a name.

macro_rules! table {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), sys::$name as i64)),*]
    };
}

/// The `SYS_*` constants under their bare names.
#[allow(non_upper_case_globals)]
mod sys {
    pub use libc::{
        SYS_accept as accept, SYS_accept4 as accept4, SYS_access as access, SYS_bind as bind,
        SYS_chdir as chdir, SYS_chmod as chmod, SYS_chown as chown, SYS_chroot as chroot,
        SYS_clone as clone, SYS_clone3 as clone3, SYS_close as close,
        SYS_close_range as close_range, SYS_connect as connect,
        SYS_copy_file_range as copy_file_range, SYS_creat as creat, SYS_dup as dup,
        SYS_dup2 as dup2, SYS_dup3 as dup3, SYS_epoll_wait as epoll_wait, SYS_execve as execve,
        SYS_execveat as execveat, SYS_exit as exit, SYS_exit_group as exit_group,
        SYS_faccessat as faccessat, SYS_faccessat2 as faccessat2, SYS_fallocate as fallocate,
        SYS_fchdir as fchdir, SYS_fchmod as fchmod, SYS_fchmodat as fchmodat, SYS_fchown as fchown,
        SYS_fchownat as fchownat, SYS_fcntl as fcntl, SYS_fdatasync as fdatasync,
        SYS_flock as flock, SYS_fork as fork, SYS_fsconfig as fsconfig, SYS_fsmount as fsmount,
        SYS_fsopen as fsopen, SYS_fstat as fstat, SYS_fstatfs as fstatfs, SYS_fsync as fsync,
        SYS_ftruncate as ftruncate, SYS_futex as futex, SYS_getdents64 as getdents64,
        SYS_getpid as getpid, SYS_getppid as getppid, SYS_gettid as gettid, SYS_getuid as getuid,
        SYS_ioctl as ioctl, SYS_kill as kill, SYS_lchown as lchown, SYS_link as link,
        SYS_linkat as linkat, SYS_listen as listen, SYS_lseek as lseek, SYS_lstat as lstat,
        SYS_madvise as madvise, SYS_mkdir as mkdir, SYS_mkdirat as mkdirat, SYS_mknod as mknod,
        SYS_mknodat as mknodat, SYS_mmap as mmap, SYS_mount as mount,
        SYS_mount_setattr as mount_setattr, SYS_move_mount as move_mount, SYS_mprotect as mprotect,
        SYS_munmap as munmap, SYS_nanosleep as nanosleep, SYS_newfstatat as newfstatat,
        SYS_open as open, SYS_open_tree as open_tree, SYS_openat as openat, SYS_openat2 as openat2,
        SYS_pidfd_open as pidfd_open, SYS_pidfd_send_signal as pidfd_send_signal, SYS_pipe as pipe,
        SYS_pipe2 as pipe2, SYS_pivot_root as pivot_root, SYS_poll as poll, SYS_ppoll as ppoll,
        SYS_prctl as prctl, SYS_pread64 as pread64, SYS_preadv as preadv, SYS_pwrite64 as pwrite64,
        SYS_pwritev as pwritev, SYS_read as read, SYS_readlink as readlink,
        SYS_readlinkat as readlinkat, SYS_readv as readv, SYS_recvfrom as recvfrom,
        SYS_recvmsg as recvmsg, SYS_rename as rename, SYS_renameat as renameat,
        SYS_renameat2 as renameat2, SYS_rmdir as rmdir, SYS_sendfile as sendfile,
        SYS_sendmsg as sendmsg, SYS_sendto as sendto, SYS_setns as setns, SYS_socket as socket,
        SYS_stat as stat, SYS_statfs as statfs, SYS_statx as statx, SYS_symlink as symlink,
        SYS_symlinkat as symlinkat, SYS_sync as sync, SYS_sync_file_range as sync_file_range,
        SYS_syncfs as syncfs, SYS_tgkill as tgkill, SYS_tkill as tkill, SYS_truncate as truncate,
        SYS_umount2 as umount2, SYS_uname as uname, SYS_unlink as unlink, SYS_unlinkat as unlinkat,
        SYS_unshare as unshare, SYS_utimensat as utimensat, SYS_vfork as vfork, SYS_wait4 as wait4,
        SYS_waitid as waitid, SYS_write as write, SYS_writev as writev,
    };
}

static TABLE: &[(&str, i64)] = table![
    accept,
    accept4,
    access,
    bind,
    chdir,
    chmod,
    chown,
    chroot,
    clone,
    clone3,
    close,
    close_range,
    connect,
    copy_file_range,
    creat,
    dup,
    dup2,
    dup3,
    epoll_wait,
    execve,
    execveat,
    exit,
    exit_group,
    faccessat,
    faccessat2,
    fallocate,
    fchdir,
    fchmod,
    fchmodat,
    fchown,
    fchownat,
    fcntl,
    fdatasync,
    flock,
    fork,
    fsconfig,
    fsmount,
    fsopen,
    fstat,
    fstatfs,
    fsync,
    ftruncate,
    futex,
    getdents64,
    getpid,
    getppid,
    gettid,
    getuid,
    ioctl,
    kill,
    lchown,
    link,
    linkat,
    listen,
    lseek,
    lstat,
    madvise,
    mkdir,
    mkdirat,
    mknod,
    mknodat,
    mmap,
    mount,
    mount_setattr,
    move_mount,
    mprotect,
    munmap,
    nanosleep,
    newfstatat,
    open,
    open_tree,
    openat,
    openat2,
    pidfd_open,
    pidfd_send_signal,
    pipe,
    pipe2,
    pivot_root,
    poll,
    ppoll,
    prctl,
    pread64,
    preadv,
    pwrite64,
    pwritev,
    read,
    readlink,
    readlinkat,
    readv,
    recvfrom,
    recvmsg,
    rename,
    renameat,
    renameat2,
    rmdir,
    sendfile,
    sendmsg,
    sendto,
    setns,
    socket,
    stat,
    statfs,
    statx,
    symlink,
    symlinkat,
    sync,
    sync_file_range,
    syncfs,
    tgkill,
    tkill,
    truncate,
    umount2,
    uname,
    unlink,
    unlinkat,
    unshare,
    utimensat,
    vfork,
    wait4,
    waitid,
    write,
    writev,
];

/// The number of system call `name` (or a decimal number as text).
pub fn number(name: &str) -> Option<i64> {
    if let Ok(n) = name.parse::<i64>() {
        return (0..1024).contains(&n).then_some(n);
    }
    // strace accepts `umount` for umount2 on x86_64, which has no plain umount.
    let name = if name == "umount" { "umount2" } else { name };
    TABLE.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// The name of system call `nr`, when the table has it.
pub fn name(nr: i64) -> Option<&'static str> {
    TABLE.iter().find(|(_, n)| *n == nr).map(|(name, _)| *name)
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
        assert_eq!(name(libc::SYS_mount), Some("mount"));
    }
}
