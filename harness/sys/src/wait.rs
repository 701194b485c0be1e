//! Waiting on a condition with a deadline, never a bare sleep. On timeout the error carries
//! what was seen last, so a failure explains itself.

use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}; last seen: {last_seen}")]
pub struct WaitError {
    pub what: String,
    pub waited: Duration,
    pub last_seen: String,
}

/// Polls `probe` until it returns `Ok(value)` or `deadline` passes. `probe` returns
/// `Err(description)` of what it saw while the condition does not hold yet.
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, WaitError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(seen) => {
                if start.elapsed() >= deadline {
                    return Err(WaitError {
                        what: what.to_string(),
                        waited: start.elapsed(),
                        last_seen: seen,
                    });
                }
            }
        }
        std::thread::sleep(pause.min(deadline.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_value_once_condition_holds() {
        let mut n = 0;
        let v = wait_until("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("n={n}"))
            }
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn timeout_reports_last_seen() {
        let err = wait_until::<()>("never", Duration::from_millis(20), || {
            Err("still nothing".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("still nothing"), "{err}");
        assert!(err.waited >= Duration::from_millis(20));
    }
}
