//! Quoting words for the command lines that findings suggest (`tune2fs -O large_dir /dev/X`):
//! a device name or path comes from the kernel log or a mount table, and must reach the shell
//! as one word, never as code.
//!
//! Hand-written rather than the `shlex` crate: shlex 1.3 is well kept (it carries the fix for
//! RUSTSEC-2024-0006), but its `try_quote` deliberately leaves control characters unquoted and
//! returns an error on NUL, and its own documentation warns against pasting its output into an
//! interactive shell, which is exactly what a remedy is for; `shell-words` single-quotes as
//! below but keeps control characters raw as well. POSIX single quotes take every character
//! literally except `'` itself (XCU 2.2.2 "Single-Quotes"), so the rule fits in a few lines.

use std::borrow::Cow;

/// `word` as one POSIX shell word: unchanged when it holds only characters no shell treats
/// specially, else in single quotes (`'` written as `'\''`). Control characters and NUL, which
/// no quoting makes safe to paste, are written as `?`: the command is for a person to read.
pub fn quote(word: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !word.is_empty() && word.chars().all(plain) && !word.starts_with('=') {
        return Cow::Borrowed(word);
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        match c {
            '\'' => out.push_str("'\\''"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// Words joined into one command line, each quoted.
pub fn join<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_as_they_are() {
        assert_eq!(quote("/dev/md10"), "/dev/md10");
        assert_eq!(
            quote("UUID=a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873"),
            "UUID=a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873"
        );
        assert_eq!(join(["tune2fs", "-O", "large_dir"]), "tune2fs -O large_dir");
        // zsh expands a leading `=` (`=ls` is the path of ls).
        assert_eq!(quote("=ls"), "'=ls'");
    }

    #[test]
    fn anything_else_is_one_single_quoted_word() {
        assert_eq!(quote("/dev/md10 ; rm -rf /"), "'/dev/md10 ; rm -rf /'");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(quote("a'b"), "'a'\\''b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a\nb\0"), "'a?b?'");
        assert_eq!(quote("`id`"), "'`id`'");
    }

    /// What sh does with the quoted word: it must come back as the same single argument.
    #[test]
    fn sh_reads_it_back_as_one_word() {
        for word in [
            "md10 ; rm -rf /",
            "a'b\"c",
            "$(id) `id` *",
            "-n",
            "x y",
            "é",
            "!x",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s|' {}", quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{word}|"));
        }
    }
}
