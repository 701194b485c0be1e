//! Artifacts kept under `target/faultline/<scenario>/` when a scenario fails (or with --keep):
//! the kernel log since the marker, mountinfo, the process tree, the result itself.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::kmsg::KmsgRecord;
use crate::result::ScenarioResult;

pub fn write(dir: &Path, kmsg: &[KmsgRecord], result: &ScenarioResult) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let log: String = kmsg.iter().map(|r| r.to_dmesg_line() + "\n").collect();
    fs::write(dir.join("kmsg.txt"), log)?;
    if let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") {
        fs::write(dir.join("mountinfo.txt"), mi)?;
    }
    fs::write(dir.join("processes.txt"), process_tree())?;
    fs::write(
        dir.join("result.json"),
        serde_json::to_string_pretty(result).unwrap_or_default(),
    )?;
    Ok(())
}

/// `pid ppid state wchan cmdline` for every process this namespace's /proc shows.
pub fn process_tree() -> String {
    let mut out = String::from("PID\tPPID\tSTATE\tWCHAN\tCMDLINE\n");
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let base = format!("/proc/{pid}");
        let Ok(stat) = fs::read_to_string(format!("{base}/stat")) else {
            continue;
        };
        // comm may contain spaces and parentheses: the fields after the last ')' are fixed.
        let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
        let mut f = after.split_whitespace();
        let state = f.next().unwrap_or("?");
        let ppid = f.next().unwrap_or("?");
        let wchan = fs::read_to_string(format!("{base}/wchan")).unwrap_or_default();
        let cmdline = fs::read(format!("{base}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{pid}\t{ppid}\t{state}\t{wchan}\t{}",
            cmdline.trim_end()
        );
    }
    out
}
