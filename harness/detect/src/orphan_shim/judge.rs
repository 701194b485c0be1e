//! The decision: what containerd answered, what the filesystem shows, and the shim's age make
//! one verdict. Kept free of I/O so the whole table is tested.

use std::time::Duration;

/// What the containerd at the shim's `-address` said about its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Tasks.Get found the task.
    Known,
    /// Tasks.Get answered NotFound: containerd has no such task in that namespace.
    NotFound,
    /// No answer (socket gone, connection refused, timeout, another error), and why.
    NoAnswer(String),
}

/// What the filesystem shows of the shim's task: v1's workdir, v2's bundle directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    Present {
        what: &'static str,
        path: String,
    },
    Gone {
        what: &'static str,
        path: String,
    },
    /// It could not tell, and why.
    Unknown(String),
}

impl Look {
    /// `(what, path, exists)` when the look found a path.
    pub fn path(&self) -> Option<(&'static str, &str, bool)> {
        match self {
            Look::Present { what, path } => Some((what, path, true)),
            Look::Gone { what, path } => Some((what, path, false)),
            Look::Unknown(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// containerd knows its task.
    Healthy,
    /// Unknown to containerd (or undecided) but younger than the grace period: containerd
    /// starts a shim before it creates the task, and stops knowing the task before the shim
    /// exits.
    NotYet,
    /// An orphan: containerd said so, or (`fallback` with why containerd did not answer) the
    /// filesystem shows its task gone.
    Orphan { fallback: Option<String> },
    /// Neither containerd nor the filesystem could decide: the check is partial here.
    Undecided(String),
}

/// The verdict on a shim of age `age` (`None` when its start could not be dated: judged as
/// if past the grace period, since the answer then does not hang on it).
pub fn decide(age: Option<Duration>, grace: Duration, answer: &Answer, look: &Look) -> Verdict {
    let young = age.is_some_and(|a| a < grace);
    match (answer, look) {
        (Answer::Known, _) => Verdict::Healthy,
        _ if young => Verdict::NotYet,
        (Answer::NotFound, _) => Verdict::Orphan { fallback: None },
        (Answer::NoAnswer(why), Look::Gone { .. }) => Verdict::Orphan {
            fallback: Some(why.clone()),
        },
        // A bundle that is still there says nothing: the orphans of containerd#7496 keep
        // theirs (the shim never got to delete it).
        (Answer::NoAnswer(why), Look::Present { what, path }) => Verdict::Undecided(format!(
            "containerd did not answer ({why}) and its {what} {path} exists, which does not tell"
        )),
        (Answer::NoAnswer(why), Look::Unknown(fs)) => {
            Verdict::Undecided(format!("containerd did not answer ({why}), and {fs}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    fn old() -> Option<Duration> {
        Some(Duration::from_secs(120))
    }

    fn young() -> Option<Duration> {
        Some(Duration::from_secs(5))
    }

    fn present() -> Look {
        Look::Present {
            what: "bundle",
            path: "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc".into(),
        }
    }

    fn gone() -> Look {
        Look::Gone {
            what: "bundle",
            path: "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc".into(),
        }
    }

    fn no_answer() -> Answer {
        Answer::NoAnswer("connection refused".into())
    }

    #[test]
    fn a_known_task_is_healthy_whatever_its_age_or_bundle() {
        for age in [young(), old(), None] {
            for look in [present(), gone(), Look::Unknown("x".into())] {
                assert_eq!(decide(age, GRACE, &Answer::Known, &look), Verdict::Healthy);
            }
        }
    }

    #[test]
    fn not_found_and_young_is_not_yet() {
        assert_eq!(
            decide(young(), GRACE, &Answer::NotFound, &present()),
            Verdict::NotYet
        );
    }

    #[test]
    fn not_found_past_grace_is_an_orphan_even_with_its_bundle_there() {
        for look in [present(), gone(), Look::Unknown("x".into())] {
            assert_eq!(
                decide(old(), GRACE, &Answer::NotFound, &look),
                Verdict::Orphan { fallback: None }
            );
        }
        assert_eq!(
            decide(None, GRACE, &Answer::NotFound, &present()),
            Verdict::Orphan { fallback: None }
        );
    }

    #[test]
    fn no_answer_and_bundle_gone_is_an_orphan_by_fallback() {
        assert_eq!(
            decide(old(), GRACE, &no_answer(), &gone()),
            Verdict::Orphan {
                fallback: Some("connection refused".into())
            }
        );
    }

    #[test]
    fn no_answer_and_bundle_present_is_undecided_not_clean() {
        let v = decide(old(), GRACE, &no_answer(), &present());
        let Verdict::Undecided(why) = v else {
            panic!("{v:?}")
        };
        assert!(why.contains("connection refused"), "{why}");
        assert!(why.contains("exists"), "{why}");
        let v = decide(
            old(),
            GRACE,
            &no_answer(),
            &Look::Unknown("no bundle found".into()),
        );
        assert!(matches!(v, Verdict::Undecided(w) if w.contains("no bundle found")));
    }

    #[test]
    fn a_young_shim_is_not_judged_on_the_fallback_either() {
        assert_eq!(
            decide(young(), GRACE, &no_answer(), &gone()),
            Verdict::NotYet
        );
        assert_eq!(
            decide(young(), GRACE, &no_answer(), &present()),
            Verdict::NotYet
        );
    }
}
