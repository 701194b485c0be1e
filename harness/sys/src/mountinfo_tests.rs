//! Every line here was copied from /proc/self/mountinfo on the development machine (kernel
//! 6.18.44), inside `unshare -m --propagation private` shells that made mount points with
//! spaces, tabs, newlines and backslashes in their names, shared/slave/unbindable mounts, an
//! empty source, and a file bind whose source was then replaced with `mv -f`.

use super::*;
use std::os::unix::ffi::OsStrExt;

/// Captured with (inside `unshare -m`, on a tmpfs at /tmp/hp-capture):
/// `mkdir "with space" $'with\ttab' $'with\nnewline' 'back\slash' "src dir"`,
/// `mount -t tmpfs "my src" "with space"`, `mount --bind "src dir" $'with\ttab'`,
/// `mount -t tmpfs tmpfs $'with\nnewline'; mount --make-shared ...`,
/// `mount --bind "src dir" 'back\slash'`, and `echo v1 > data.txt; mount --bind data.txt
/// target.txt; mount -o remount,bind,ro target.txt; echo v2 > new.txt; mv -f new.txt data.txt`.
const ESCAPES: &[u8] = br"63 43 0:39 / /tmp/hp-capture rw,relatime - tmpfs tmpfs rw,size=1024k
64 63 0:40 / /tmp/hp-capture/with\040space rw,relatime - tmpfs my\040src rw,size=1024k
65 63 0:39 /src\040dir /tmp/hp-capture/with\011tab rw,relatime - tmpfs tmpfs rw,size=1024k
66 63 0:41 / /tmp/hp-capture/with\012newline rw,relatime shared:1 - tmpfs tmpfs rw
67 63 0:39 /src\040dir /tmp/hp-capture/back\134slash rw,relatime - tmpfs tmpfs rw,size=1024k
68 63 0:39 /data.txt//deleted /tmp/hp-capture/target.txt ro,relatime - tmpfs tmpfs rw,size=1024k
";

/// Captured with `mount --bind outer root/in; mount --make-slave root/in; mount --make-shared
/// root/in` (shared:2 master:1), `mount -t tmpfs "" empty` (an empty source: two spaces),
/// `mount --make-unbindable unb`, and an rbind of the host's ext4 /usr.
const PROPAGATION: &[u8] = b"64 63 0:39 /outer /tmp/hp-capture2/outer rw,relatime shared:1 - tmpfs tmpfs rw,size=1024k
65 63 0:39 /outer /tmp/hp-capture2/root/in rw,relatime shared:2 master:1 - tmpfs tmpfs rw,size=1024k
66 63 0:40 / /tmp/hp-capture2/empty rw,relatime - tmpfs  rw
67 63 0:39 /unb /tmp/hp-capture2/unb rw,relatime unbindable - tmpfs tmpfs rw,size=1024k
68 63 254:0 /usr /tmp/hp-capture2/root/usr rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
";

/// The host's own table (/proc/1/mountinfo), unmodified.
const HOST: &[u8] = b"22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
28 27 0:25 / /mnt/sandboxing/model_tools_env/v1/python ro,nosuid,nodev,relatime - tmpfs model_tools_unavailable ro,size=4k,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

#[test]
fn unescapes_space_tab_newline_and_backslash() {
    let m = parse(ESCAPES).unwrap();
    assert_eq!(m.len(), 6);
    assert_eq!(m[1].mount_point, Path::new("/tmp/hp-capture/with space"));
    assert_eq!(m[1].source, "my src");
    assert_eq!(m[2].root, Path::new("/src dir"));
    assert_eq!(m[2].mount_point, Path::new("/tmp/hp-capture/with\ttab"));
    assert_eq!(m[3].mount_point, Path::new("/tmp/hp-capture/with\nnewline"));
    assert_eq!(m[4].mount_point, Path::new("/tmp/hp-capture/back\\slash"));
}

#[test]
fn all_fields_of_a_plain_line() {
    let m = parse(ESCAPES).unwrap();
    let first = &m[0];
    assert_eq!(first.mount_id, 63);
    assert_eq!(first.parent_id, 43);
    assert_eq!((first.major, first.minor), (0, 39));
    assert_eq!(first.device(), "0:39");
    assert_eq!(first.root, Path::new("/"));
    assert!(!first.root_deleted);
    assert!(!first.is_partial_bind());
    assert_eq!(first.mount_options, ["rw", "relatime"]);
    assert!(first.optional_fields.is_empty());
    assert_eq!(first.fstype, "tmpfs");
    assert_eq!(first.source, "tmpfs");
    assert_eq!(first.super_options, ["rw", "size=1024k"]);
    assert_eq!(first.super_option("size"), Some("1024k"));
    assert_eq!(first.super_option("rw"), Some(""));
    assert_eq!(first.super_option("mode"), None);
}

#[test]
fn file_bind_renamed_over_is_marked_deleted() {
    let m = parse(ESCAPES).unwrap();
    let bind = &m[5];
    assert!(bind.root_deleted);
    assert_eq!(bind.root, Path::new("/data.txt"));
    assert_eq!(bind.root_as_shown(), "/data.txt//deleted");
    assert!(bind.is_read_only());
    assert!(bind.is_partial_bind());
    assert_eq!(bind.mount_point, Path::new("/tmp/hp-capture/target.txt"));
    // The healthy binds of the same filesystem are not.
    assert!(m
        .iter()
        .filter(|x| x.mount_id != 68)
        .all(|x| !x.root_deleted));
}

#[test]
fn optional_fields_zero_one_or_two() {
    let m = parse(PROPAGATION).unwrap();
    assert_eq!(m[0].optional_fields, [OptionalField::Shared(1)]);
    assert_eq!(
        m[1].optional_fields,
        [OptionalField::Shared(2), OptionalField::Master(1)]
    );
    assert_eq!(m[1].shared_peer_group(), Some(2));
    assert_eq!(m[1].master_peer_group(), Some(1));
    assert_eq!(m[3].optional_fields, [OptionalField::Unbindable]);
    assert!(m[4].optional_fields.is_empty());
    assert_eq!(
        parse(ESCAPES).unwrap()[3].optional_fields,
        [OptionalField::Shared(1)]
    );
}

#[test]
fn empty_source_does_not_shift_fields() {
    let m = parse(PROPAGATION).unwrap();
    assert_eq!(m[2].source, "");
    assert_eq!(m[2].fstype, "tmpfs");
    assert_eq!(m[2].super_options, ["rw"]);
}

#[test]
fn host_table() {
    let m = parse(HOST).unwrap();
    let root = m.iter().find(|x| x.mount_point == Path::new("/")).unwrap();
    assert_eq!((root.major, root.minor), (254, 0));
    assert_eq!(root.source, "/dev/vda");
    assert_eq!(root.super_option("resuid"), Some("65534"));
    let ro = &m[2];
    assert!(ro.is_read_only());
    assert!(ro.has_mount_option("nosuid"));
    assert!(!ro.has_mount_option("ro,nosuid"));
}

#[test]
fn unknown_optional_field_is_kept() {
    let line = b"65 63 0:39 / /x rw shared:2 future:7 - tmpfs tmpfs rw";
    let m = MountInfo::parse_line(line).unwrap();
    assert_eq!(
        m.optional_fields,
        [
            OptionalField::Shared(2),
            OptionalField::Other("future:7".into())
        ]
    );
}

#[test]
fn non_utf8_path_survives() {
    let line = b"65 63 0:39 / /tmp/caf\xe9 rw - tmpfs tmpfs rw";
    let m = MountInfo::parse_line(line).unwrap();
    assert_eq!(m.mount_point.as_os_str().as_bytes(), b"/tmp/caf\xe9");
}

#[test]
fn malformed_lines_are_errors_with_the_line_number() {
    let err = parse(b"63 43 0:39 / /a rw - tmpfs tmpfs rw\n63 43 0:39 / /b rw tmpfs tmpfs rw\n")
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("line 2"), "{msg}");
    assert!(msg.contains("separator"), "{msg}");
    assert!(MountInfo::parse_line(b"x 43 0:39 / /a rw - tmpfs tmpfs rw").is_err());
    assert!(MountInfo::parse_line(b"63 43 0-39 / /a rw - tmpfs tmpfs rw").is_err());
    assert!(MountInfo::parse_line(b"63 43 0:39 / /a rw - tmpfs").is_err());
}

#[test]
fn unescape_leaves_stray_backslashes_alone() {
    assert_eq!(unescape(br"a\040b"), b"a b");
    assert_eq!(unescape(br"a\0"), br"a\0");
    assert_eq!(unescape(br"a\9999"), br"a\9999");
    assert_eq!(unescape(br"\134\134"), br"\\");
}

#[test]
fn reads_this_process_table() {
    let m = read_mountinfo(Path::new("/proc"), None).unwrap();
    assert!(m.iter().any(|x| x.mount_point == Path::new("/")));
    assert!(m.iter().any(|x| x.fstype == "proc"));
}
