//! What to inject: strace's `-e inject=SYSCALL:...` tampering options, parsed and typed.
//!
//! Supported, with strace's meaning: `delay_enter=DUR`, `delay_exit=DUR`, `error=ERRNO`,
//! `retval=N`, `when=EXPR`. Not supported: `signal=`, `poke_enter=`/`poke_exit=`, syscall
//! classes (`%file`) and regular expressions.
//!
//! `when=` forms: `N` (only the N-th call), `N+` (the N-th and every later one), `N+S` (the
//! N-th and every S-th after it), `N..M` (the N-th through the M-th), `N..M+S`. Calls are
//! counted from 1 per rule across the whole traced tree (strace counts per thread; a Go
//! program makes its calls from whichever thread is free, so a per-thread count would not say
//! which call is hit). Without `when=` every call is tampered with.
//!
//! Durations: a number with `s`, `ms`, `us` or `ns`; a bare number means microseconds, as in
//! strace.

use std::time::Duration;

use super::syscalls;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("unknown system call {0:?} (give its x86_64 name or number)")]
    UnknownSyscall(String),
    #[error("bad duration {0:?} (use e.g. 12s, 500ms, 100us)")]
    Duration(String),
    #[error("unknown errno {0:?} (use a name like EIO or a number 1..4095)")]
    Errno(String),
    #[error("bad retval {0:?} (use an integer)")]
    Retval(String),
    #[error("bad when expression {0:?} (use N, N+, N+STEP, N..M or N..M+STEP with N >= 1)")]
    When(String),
    #[error("error= and retval= exclude each other")]
    ErrorAndRetval,
    #[error("bad inject expression {0:?}: {1}")]
    Expression(String, String),
    #[error("nothing to inject for {0}: give a delay, an error or a retval")]
    Empty(String),
}

/// What replaces the system call's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Skip the call and return `-1` with this errno.
    Error(i32),
    /// Skip the call and return this value.
    Retval(i64),
}

/// Which calls (1-based, counted per rule) are tampered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    pub first: u64,
    pub last: Option<u64>,
    pub step: u64,
}

impl Default for When {
    fn default() -> Self {
        When {
            first: 1,
            last: None,
            step: 1,
        }
    }
}

impl When {
    pub fn parse(s: &str) -> Result<When, SpecError> {
        let bad = || SpecError::When(s.to_string());
        let num = |t: &str| t.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(bad);
        let (range, step) = match s.split_once('+') {
            Some((r, "")) => (r, Some(1)),
            Some((r, st)) => (r, Some(num(st)?)),
            None => (s, None),
        };
        let (first, last) = match range.split_once("..") {
            Some((a, b)) => (num(a)?, Some(num(b)?)),
            // A bare `N` is only the N-th call; `N+...` is open-ended.
            None => {
                let n = num(range)?;
                (n, if step.is_some() { None } else { Some(n) })
            }
        };
        if last.is_some_and(|l| l < first) {
            return Err(bad());
        }
        Ok(When {
            first,
            last,
            step: step.unwrap_or(1),
        })
    }

    /// Whether the `n`-th call (1-based) is tampered with.
    pub fn matches(&self, n: u64) -> bool {
        n >= self.first
            && self.last.is_none_or(|l| n <= l)
            && (n - self.first).is_multiple_of(self.step)
    }
}

/// The `when=` expression, as [`When::parse`] reads it.
impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.first)?;
        match (self.last, self.step) {
            (Some(l), _) if l == self.first => Ok(()),
            (Some(l), 1) => write!(f, "..{l}"),
            (Some(l), st) => write!(f, "..{l}+{st}"),
            (None, st) => write!(f, "+{st}"),
        }
    }
}

/// One system call and what to do to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub syscall: String,
    pub nr: i64,
    pub delay_enter: Option<Duration>,
    pub delay_exit: Option<Duration>,
    pub fault: Option<Fault>,
    pub when: When,
}

impl Rule {
    /// A rule that does nothing yet, for `name` (an x86_64 syscall name or number).
    pub fn new(name: &str) -> Result<Rule, SpecError> {
        let nr = syscalls::number(name).ok_or_else(|| SpecError::UnknownSyscall(name.into()))?;
        Ok(Rule {
            syscall: syscalls::name(nr).unwrap_or(name).to_string(),
            nr,
            delay_enter: None,
            delay_exit: None,
            fault: None,
            when: When::default(),
        })
    }

    /// Parses strace's form `SYSCALL:opt=val[:opt=val]...` (without the `inject=` prefix).
    pub fn parse_strace(expr: &str) -> Result<Rule, SpecError> {
        let mut parts = expr.split(':');
        let name = parts.next().unwrap_or("");
        let mut rule = Rule::new(name)?;
        let mut error = None;
        let mut retval = None;
        for part in parts {
            let (key, val) = part.split_once('=').ok_or_else(|| {
                SpecError::Expression(expr.into(), format!("{part:?} is not KEY=VALUE"))
            })?;
            match key {
                "delay_enter" => rule.delay_enter = Some(parse_duration(val)?),
                "delay_exit" => rule.delay_exit = Some(parse_duration(val)?),
                "error" => error = Some(parse_errno(val)?),
                "retval" => retval = Some(parse_retval(val)?),
                "when" => rule.when = When::parse(val)?,
                other => {
                    return Err(SpecError::Expression(
                        expr.into(),
                        format!("unsupported option {other:?}"),
                    ))
                }
            }
        }
        rule.fault = fault(error, retval)?;
        rule.validate()?;
        Ok(rule)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if self.delay_enter.is_none() && self.delay_exit.is_none() && self.fault.is_none() {
            return Err(SpecError::Empty(self.syscall.clone()));
        }
        Ok(())
    }

    /// The rule in strace's `-e inject=` syntax, for logs and reports.
    pub fn to_strace(&self) -> String {
        let mut s = format!("inject={}", self.syscall);
        if let Some(d) = self.delay_enter {
            s += &format!(":delay_enter={}us", d.as_micros());
        }
        if let Some(d) = self.delay_exit {
            s += &format!(":delay_exit={}us", d.as_micros());
        }
        match self.fault {
            Some(Fault::Error(e)) => s += &format!(":error={}", errno_name(e)),
            Some(Fault::Retval(v)) => s += &format!(":retval={v}"),
            None => {}
        }
        if self.when != When::default() {
            s += &format!(":when={}", self.when);
        }
        s
    }
}

/// `error=` and `retval=` together, as strace refuses them.
pub fn fault(error: Option<i32>, retval: Option<i64>) -> Result<Option<Fault>, SpecError> {
    match (error, retval) {
        (Some(_), Some(_)) => Err(SpecError::ErrorAndRetval),
        (Some(e), None) => Ok(Some(Fault::Error(e))),
        (None, Some(v)) => Ok(Some(Fault::Retval(v))),
        (None, None) => Ok(None),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, SpecError> {
    let bad = || SpecError::Duration(s.to_string());
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "" | "us" => 1e-6,
        "ns" => 1e-9,
        _ => return Err(bad()),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn parse_retval(s: &str) -> Result<i64, SpecError> {
    s.parse().map_err(|_| SpecError::Retval(s.to_string()))
}

/// An errno by name (`EIO`) or number. Names come from nix's `Errno`, which mirrors the
/// kernel's list, so no table of our own drifts from it.
pub fn parse_errno(s: &str) -> Result<i32, SpecError> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..4096).contains(&n) {
            Ok(n)
        } else {
            Err(SpecError::Errno(s.into()))
        };
    }
    let want = s.to_ascii_uppercase();
    (1..4096)
        .find(|&n| errno_name(n) == want)
        .ok_or_else(|| SpecError::Errno(s.into()))
}

pub fn errno_name(n: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_expressions() {
        let w = When::parse("2").unwrap();
        assert!(!w.matches(1) && w.matches(2) && !w.matches(3));
        let w = When::parse("2+").unwrap();
        assert!(!w.matches(1) && w.matches(2) && w.matches(9));
        let w = When::parse("3+2").unwrap();
        assert_eq!(
            (1..10).filter(|n| w.matches(*n)).collect::<Vec<_>>(),
            [3, 5, 7, 9]
        );
        let w = When::parse("3..5").unwrap();
        assert_eq!(
            (1..10).filter(|n| w.matches(*n)).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let w = When::parse("1..7+3").unwrap();
        assert_eq!(
            (1..10).filter(|n| w.matches(*n)).collect::<Vec<_>>(),
            [1, 4, 7]
        );
        for bad in ["0", "", "x", "5..3", "1+0", "2..", "+1"] {
            assert!(When::parse(bad).is_err(), "{bad}");
        }
        assert!((1..5).all(|n| When::default().matches(n)));
    }

    #[test]
    fn durations_and_errnos() {
        assert_eq!(parse_duration("12s").unwrap(), Duration::from_secs(12));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("100").unwrap(), Duration::from_micros(100));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_errno("EBUSY").unwrap(), libc::EBUSY);
        assert_eq!(parse_errno("eio").unwrap(), libc::EIO);
        assert_eq!(parse_errno("5").unwrap(), 5);
        assert!(parse_errno("ENOTANERRNO").is_err());
    }

    #[test]
    fn strace_expressions() {
        let r = Rule::parse_strace("umount2:delay_enter=12s").unwrap();
        assert_eq!(r.nr, libc::SYS_umount2);
        assert_eq!(r.delay_enter, Some(Duration::from_secs(12)));
        assert_eq!(r.to_strace(), "inject=umount2:delay_enter=12000000us");
        let r = Rule::parse_strace("openat:error=ENOENT:when=3..5").unwrap();
        assert_eq!(r.fault, Some(Fault::Error(libc::ENOENT)));
        assert_eq!(r.to_strace(), "inject=openat:error=ENOENT:when=3..5");
        assert_eq!(
            Rule::parse_strace("write:error=EIO:retval=1"),
            Err(SpecError::ErrorAndRetval)
        );
        assert!(matches!(
            Rule::parse_strace("umount2"),
            Err(SpecError::Empty(_))
        ));
        assert!(matches!(
            Rule::parse_strace("umount2:signal=KILL"),
            Err(SpecError::Expression(..))
        ));
        assert!(matches!(
            Rule::parse_strace("frobnicate:error=EIO"),
            Err(SpecError::UnknownSyscall(_))
        ));
    }
}
