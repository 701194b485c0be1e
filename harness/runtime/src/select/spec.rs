//! The `--runtime SPEC` grammar, parsed before anything is resolved or fetched:
//!
//! ```text
//! SPEC  = BASE | BASE "," ITEMS | ITEMS
//! BASE  = "system" | "debian" | "debian:containerd=" VERSION
//! ITEMS = ITEM ("," ITEM)*
//! ITEM  = "containerd=" PATH | "oci=" (NAME | PATH)
//! ```
//!
//! The base gives containerd and the OCI runtime; an item replaces one of them. Without a
//! base, what the items leave open comes from the default base (`system` where containerd
//! is on PATH, else `debian`).

use std::fmt;
use std::path::PathBuf;

/// Where containerd and the OCI runtime come from unless an item says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// containerd, its shims and runc on PATH.
    System,
    /// Debian's `containerd` (this version, or the candidate) and `runc` (the candidate),
    /// fetched into faultline's cache.
    Debian { containerd: Option<String> },
    /// No base given: `system` where containerd is on PATH, else `debian`.
    Default,
}

/// The OCI runtime the runc shims run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Oci {
    /// Looked up on PATH (`runc`, `crun`).
    Name(String),
    /// A binary (the value holds a `/`).
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSpec {
    /// The spec as given, recorded with what it resolved to.
    pub text: String,
    pub base: Base,
    /// `containerd=PATH`: its shims and ctr are taken from the same directory.
    pub containerd: Option<PathBuf>,
    /// `oci=NAME|PATH`.
    pub oci: Option<Oci>,
}

/// What is wrong with a spec, in one line; [`fmt::Display`] adds the forms it can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--runtime {text:?}: {why}; {FORMS}")]
pub struct SpecError {
    pub text: String,
    pub why: String,
}

const FORMS: &str = "use system, debian, debian:containerd=VERSION, or a comma list of containerd=PATH and oci=NAME|PATH (after system or debian, or alone)";

impl RuntimeSpec {
    /// The default spec: `system` where containerd is on PATH, `debian` otherwise.
    pub fn default_for(containerd_on_path: bool) -> RuntimeSpec {
        let (text, base) = if containerd_on_path {
            ("system", Base::System)
        } else {
            ("debian", Base::Debian { containerd: None })
        };
        RuntimeSpec {
            text: text.into(),
            base,
            containerd: None,
            oci: None,
        }
    }

    pub fn parse(text: &str) -> Result<RuntimeSpec, SpecError> {
        let bad = |why: String| SpecError {
            text: text.to_string(),
            why,
        };
        let mut spec = RuntimeSpec {
            text: text.to_string(),
            base: Base::Default,
            containerd: None,
            oci: None,
        };
        if text.is_empty() {
            return Err(bad("empty".into()));
        }
        for (i, item) in text.split(',').enumerate() {
            if item.is_empty() {
                return Err(bad("an empty item between commas".into()));
            }
            if let Some(base) = parse_base(item).map_err(&bad)? {
                if i > 0 {
                    return Err(bad(format!("{item:?} must come first")));
                }
                spec.base = base;
                continue;
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(bad(format!("unknown item {item:?}")));
            };
            if value.is_empty() {
                return Err(bad(format!("{key}= needs a value")));
            }
            match key {
                "containerd" => {
                    if spec.containerd.is_some() {
                        return Err(bad("containerd= given twice".into()));
                    }
                    if !value.contains('/') {
                        return Err(bad(format!(
                            "containerd= takes a path to a containerd binary, got {value:?} (system takes the one on PATH)"
                        )));
                    }
                    if matches!(
                        spec.base,
                        Base::Debian {
                            containerd: Some(_)
                        }
                    ) {
                        return Err(bad(
                            "containerd given twice (debian:containerd=VERSION and containerd=PATH)"
                                .into(),
                        ));
                    }
                    spec.containerd = Some(PathBuf::from(value));
                }
                "oci" => {
                    if spec.oci.is_some() {
                        return Err(bad("oci= given twice".into()));
                    }
                    spec.oci = Some(if value.contains('/') {
                        Oci::Path(PathBuf::from(value))
                    } else {
                        Oci::Name(value.to_string())
                    });
                }
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        Ok(spec)
    }
}

/// `system`, `debian`, `debian:containerd=VERSION` as a base; `Ok(None)` for an item that
/// is not a base.
fn parse_base(item: &str) -> Result<Option<Base>, String> {
    match item {
        "system" => return Ok(Some(Base::System)),
        "debian" => return Ok(Some(Base::Debian { containerd: None })),
        _ => {}
    }
    let Some(rest) = item.strip_prefix("debian:") else {
        return Ok(None);
    };
    match rest.split_once('=') {
        Some(("containerd", v)) if !v.is_empty() => Ok(Some(Base::Debian {
            containerd: Some(v.to_string()),
        })),
        Some(("containerd", _)) => Err("debian:containerd= needs a version".into()),
        _ => Err(format!(
            "debian takes containerd=VERSION (e.g. debian:containerd=1.6.20~ds1-1+deb12u2), got {rest:?}"
        )),
    }
}

impl fmt::Display for RuntimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> RuntimeSpec {
        RuntimeSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn why(text: &str) -> String {
        RuntimeSpec::parse(text).unwrap_err().why
    }

    #[test]
    fn bases() {
        assert_eq!(ok("system").base, Base::System);
        assert_eq!(ok("debian").base, Base::Debian { containerd: None });
        assert_eq!(
            ok("debian:containerd=1.6.20~ds1-1+deb12u2").base,
            Base::Debian {
                containerd: Some("1.6.20~ds1-1+deb12u2".into())
            }
        );
        let s = ok("system");
        assert_eq!((s.containerd, s.oci), (None, None));
    }

    #[test]
    fn items_alone_and_after_a_base() {
        let s = ok("containerd=/opt/c/bin/containerd,oci=crun");
        assert_eq!(s.base, Base::Default);
        assert_eq!(s.containerd, Some(PathBuf::from("/opt/c/bin/containerd")));
        assert_eq!(s.oci, Some(Oci::Name("crun".into())));
        let s = ok("oci=./bin/runc");
        assert_eq!(s.oci, Some(Oci::Path("./bin/runc".into())));
        assert_eq!(s.containerd, None);
        let s = ok("debian,oci=crun");
        assert_eq!(s.base, Base::Debian { containerd: None });
        assert_eq!(s.oci, Some(Oci::Name("crun".into())));
        assert_eq!(ok("system,oci=crun").to_string(), "system,oci=crun");
        assert_eq!(
            ok("debian:containerd=1.6.20~ds1-1+deb12u3,oci=/usr/bin/crun").oci,
            Some(Oci::Path("/usr/bin/crun".into()))
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong_in_one_line() {
        let e = RuntimeSpec::parse("bogus").unwrap_err().to_string();
        assert_eq!(
            e,
            format!("--runtime \"bogus\": unknown item \"bogus\"; {FORMS}")
        );
        assert!(!e.contains('\n'));
        assert_eq!(why(""), "empty");
        assert_eq!(why("system,"), "an empty item between commas");
        assert_eq!(why("oci=crun,system"), "\"system\" must come first");
        assert_eq!(why("system,debian"), "\"debian\" must come first");
        assert_eq!(why("oci="), "oci= needs a value");
        assert_eq!(why("oci=runc,oci=crun"), "oci= given twice");
        assert_eq!(why("runc=/usr/sbin/runc"), "unknown key \"runc\"");
        assert!(why("containerd=containerd").contains("takes a path"));
        assert_eq!(
            why("containerd=/a/containerd,containerd=/b/containerd"),
            "containerd= given twice"
        );
        assert!(why("debian:containerd=1.6.20,containerd=/x/containerd")
            .contains("containerd given twice"));
        assert_eq!(
            why("debian:containerd="),
            "debian:containerd= needs a version"
        );
        assert!(why("debian:runc=1.1").starts_with("debian takes containerd=VERSION"));
        assert!(why("debian:6.1").contains("got \"6.1\""));
    }

    #[test]
    fn the_default_follows_containerd_on_path() {
        assert_eq!(RuntimeSpec::default_for(true).base, Base::System);
        assert_eq!(RuntimeSpec::default_for(true).text, "system");
        assert_eq!(
            RuntimeSpec::default_for(false).base,
            Base::Debian { containerd: None }
        );
        assert_eq!(RuntimeSpec::default_for(false).text, "debian");
    }
}
