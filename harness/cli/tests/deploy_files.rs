//! The deployment files under harness/deploy/ are what a cluster would accept:
//!
//! - the manifests validate against Kubernetes' OpenAPI schemas with `kubernetes-validate
//!   --strict` (PyPI; ci/setup installs it), which also rejects fields the schema does not
//!   know;
//! - the NPD configs pass node-problem-detector's own checks (`ApplyConfiguration` and
//!   `Validate` in kubernetes/node-problem-detector, pkg/custompluginmonitor/types/config.go)
//!   and stricter ones that catch what NPD lets through silently (a misspelt field, which
//!   Go's encoding/json ignores; a concurrency of 0, which blocks every run; a
//!   max_output_length past the 4096 bytes NPD reads);
//! - the configs, the ConfigMap and the DaemonSet agree with each other and with faultline
//!   (every detector has one rule; every rule names a real detector, asks for `--format
//!   npd`, and calls the binary where the DaemonSet installs it).

mod npd_plugin;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use npd_plugin::{config, deploy_dir, go_duration, rules, CONFIGS};
use serde_json::Value;

const MANIFESTS: [&str; 3] = ["rbac.yaml", "config.yaml", "daemonset.yaml"];
/// The most `check --format npd` prints (NPD's default max_output_length).
const NPD_LINE: usize = 80;
/// Where the DaemonSet's init container puts the binary.
const INSTALLED: &str = "/opt/faultline/faultline";

fn manifest(name: &str) -> PathBuf {
    deploy_dir().join(name)
}

/// Fails the test, with what to install, when `program` is not on PATH.
fn require_program(program: &str, install: &str) {
    if faultline_sys::path::find_on_path(program).is_none() {
        panic!("cannot run here: {program} is not on PATH ({install}; ci/setup does)");
    }
}

fn kubernetes_validate(args: &[&str], files: &[PathBuf]) -> (Option<i32>, String) {
    require_program("kubernetes-validate", "pip install kubernetes-validate");
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(args)
        .args(files)
        .output()
        .expect("failed to run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Every document of a YAML file, as JSON (PyYAML, which kubernetes-validate depends on).
fn yaml_documents(path: &Path) -> Vec<Value> {
    require_program("python3", "apt-get install python3");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(path)
        .output()
        .expect("failed to run python3");
    assert!(
        out.status.success(),
        "python3 could not read {} as YAML (PyYAML comes with kubernetes-validate): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|m| manifest(m)).collect();
    // The default (the newest Kubernetes the tool knows) and the oldest release with the
    // securityContext.appArmorProfile field the DaemonSet uses.
    for version in [None, Some("1.30.0")] {
        let args: Vec<&str> = version.map(|v| vec!["-k", v]).unwrap_or_default();
        let (code, text) = kubernetes_validate(&args, &files);
        assert_eq!(code, Some(0), "kubernetes-validate {args:?}:\n{text}");
        for resource in [
            "serviceaccount/faultline-npd",
            "clusterrole/faultline-npd",
            "clusterrolebinding/faultline-npd",
            "configmap/faultline-npd-config",
            "daemonset/faultline-npd",
        ] {
            assert!(
                text.contains(&format!("passed for resource {resource}")),
                "{resource} not validated: {text}"
            );
        }
    }
}

/// The validator is strict: a field the schema does not know fails, so the pass above means
/// something.
#[test]
fn the_validator_rejects_an_unknown_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("daemonset.yaml");
    let text = std::fs::read_to_string(manifest("daemonset.yaml")).unwrap();
    std::fs::write(
        &bad,
        text.replace("hostPID: true", "hostPID: true\n      hostPIDs: true"),
    )
    .unwrap();
    let (code, text) = kubernetes_validate(&[], &[bad]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("'hostPIDs' was unexpected"), "{text}");
}

/// The fields NPD's custom plugin config has (config.go, types.go, pkg/types).
const TOP: &[&str] = &[
    "plugin",
    "pluginConfig",
    "source",
    "conditions",
    "rules",
    "metricsReporting",
];
const GLOBAL: &[&str] = &[
    "invoke_interval",
    "timeout",
    "max_output_length",
    "concurrency",
    "enable_message_change_based_condition_update",
    "skip_initial_status",
];
const RULE: &[&str] = &[
    "type",
    "condition",
    "reason",
    "path",
    "args",
    "timeout",
    "invoke_interval",
];
const CONDITION: &[&str] = &["type", "reason", "message"];

fn assert_known_fields(what: &str, v: &Value, known: &[&str]) {
    for key in v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object"))
        .keys()
    {
        assert!(
            known.contains(&key.as_str()),
            "{what}: unknown field {key:?} (NPD would ignore it)"
        );
    }
}

/// NPD's `ApplyConfiguration` and `Validate`, and the stricter checks.
fn validate(name: &str, c: &Value) {
    assert_known_fields(name, c, TOP);
    assert_eq!(
        c["plugin"], "custom",
        "{name}: NPD supports only the custom plugin"
    );
    let g = &c["pluginConfig"];
    assert_known_fields(&format!("{name} pluginConfig"), g, GLOBAL);
    let duration = |what: &str, v: &Value, default: u64| match v.as_str() {
        Some(s) => {
            go_duration(s).unwrap_or_else(|| panic!("{name}: {what} {s:?} is not a Go duration"))
        }
        None => {
            assert!(v.is_null(), "{name}: {what} must be a string");
            Duration::from_secs(default)
        }
    };
    let timeout = duration("timeout", &g["timeout"], 5);
    let interval = duration("invoke_interval", &g["invoke_interval"], 30);
    assert!(
        timeout > Duration::ZERO && interval > Duration::ZERO,
        "{name}"
    );
    assert!(timeout <= interval, "{name}: runs would overlap");
    let max = g["max_output_length"].as_u64().unwrap_or(80);
    assert!(
        (NPD_LINE..=4096).contains(&(max as usize)),
        "{name}: max_output_length {max} must hold faultline's line and not exceed the 4096 bytes NPD reads"
    );
    // A buffered channel of this size gates the runs: 0 blocks them all.
    assert!(
        g["concurrency"].as_u64().unwrap_or(3) > 0,
        "{name}: concurrency"
    );
    assert!(
        !c["source"].as_str().unwrap_or_default().is_empty(),
        "{name}: source"
    );

    let mut defaults = BTreeSet::new();
    for cond in c["conditions"].as_array().expect("conditions[]") {
        assert_known_fields(&format!("{name} condition"), cond, CONDITION);
        for k in CONDITION {
            assert!(
                !cond[k].as_str().unwrap_or_default().is_empty(),
                "{name}: condition {cond} needs a {k}"
            );
        }
        assert!(
            defaults.insert(cond["type"].as_str().unwrap()),
            "{name}: {cond} twice"
        );
    }
    for (raw, rule) in c["rules"].as_array().unwrap().iter().zip(rules(c)) {
        assert_known_fields(&format!("{name} rule"), raw, RULE);
        let own = duration("rule timeout", &raw["timeout"], 5);
        assert!(
            own <= timeout,
            "{name}: {raw}: plugin timeout is greater than global timeout"
        );
        assert!(!rule.reason.is_empty(), "{name}: {raw}: reason");
        match rule.kind.as_str() {
            "permanent" => {
                let cond = rule.condition.as_deref().unwrap_or_default();
                assert!(
                    defaults.contains(cond),
                    "{name}: Permanent problem {cond} does not have preset default condition."
                );
            }
            // NPD ignores a temporary rule's condition: one there would mislead a reader.
            "temporary" => assert!(rule.condition.is_none(), "{name}: {raw}"),
            other => panic!("{name}: rule type {other:?} is neither temporary nor permanent"),
        }
        // NPD checks that the path exists on the node: it is where the DaemonSet puts it.
        assert_eq!(rule.path, Path::new(INSTALLED), "{name}: {raw}");
        assert_eq!(rule.args[0], "check", "{name}: {raw}");
        let format = rule.args.windows(2).any(|w| w == ["--format", "npd"]);
        assert!(format, "{name}: {raw} must ask for --format npd");
    }
}

#[test]
fn npd_configs_pass_npd_validation() {
    for name in CONFIGS {
        validate(name, &config(name));
    }
}

/// Checks that the validation catches what it should: each broken copy must fail.
#[test]
fn npd_validation_rejects_broken_configs() {
    let good = config(CONFIGS[0]);
    type Breakage = (&'static str, fn(&mut Value));
    let breakages: [Breakage; 6] = [
        ("plugin", |c| c["plugin"] = "script".into()),
        ("rule timeout", |c| c["rules"][0]["timeout"] = "6s".into()),
        ("duration", |c| {
            c["pluginConfig"]["timeout"] = "5 seconds".into()
        }),
        ("no default", |c| {
            c["conditions"].as_array_mut().unwrap().remove(0);
        }),
        ("type", |c| c["rules"][0]["type"] = "permanant".into()),
        ("misspelt", |c| {
            c["pluginConfig"]["invoke_intervall"] = "30s".into()
        }),
    ];
    for (what, break_it) in breakages {
        let mut c = good.clone();
        break_it(&mut c);
        let failed = std::panic::catch_unwind(|| validate(what, &c)).is_err();
        assert!(failed, "{what}: a broken config passed validation");
    }
}

#[test]
fn go_durations_parse_like_go() {
    assert_eq!(go_duration("5s"), Some(Duration::from_secs(5)));
    assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(go_duration("1.5h"), Some(Duration::from_secs(5400)));
    assert_eq!(go_duration("300ms"), Some(Duration::from_millis(300)));
    assert_eq!(go_duration("0"), Some(Duration::ZERO));
    for bad in ["", "5", "s", "5 s", "5sec", "1d"] {
        assert_eq!(go_duration(bad), None, "{bad:?}");
    }
}

/// One rule per detector across both configs; each rule names a detector faultline has;
/// the two NPDs report distinct condition types (two sources setting one condition would
/// overwrite each other).
#[test]
fn every_detector_has_exactly_one_rule() {
    let mut seen = Vec::new();
    let mut conditions = BTreeSet::new();
    for name in CONFIGS {
        let c = config(name);
        for r in rules(&c) {
            assert!(
                faultline_detect::by_name(r.detector()).is_some(),
                "{name}: no detector {:?}",
                r.detector()
            );
            seen.push(r.detector().to_string());
        }
        for cond in c["conditions"].as_array().unwrap() {
            assert!(
                conditions.insert(cond["type"].to_string()),
                "{cond} in both"
            );
        }
    }
    let mut all: Vec<String> = faultline_detect::all()
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    all.sort();
    seen.sort();
    assert_eq!(seen, all);
}

/// The ConfigMap carries the configs byte for byte, and each NPD container of the DaemonSet
/// reads one of them, with the binary installed where the rules call it.
#[test]
fn configmap_and_daemonset_agree_with_the_configs() {
    let cm = &yaml_documents(&manifest("config.yaml"))[0];
    for name in CONFIGS {
        let text = cm["data"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {cm}"));
        let file = std::fs::read_to_string(deploy_dir().join(name)).unwrap();
        assert_eq!(text, file, "config.yaml's {name} differs from {name}");
    }
    let ds = &yaml_documents(&manifest("daemonset.yaml"))[0];
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let init = &pod["initContainers"][0];
    let copied = init["command"].as_array().unwrap().last().unwrap();
    assert_eq!(copied, INSTALLED, "{init}");
    let mut read = Vec::new();
    for c in pod["containers"].as_array().unwrap() {
        let config = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|a| {
                a.as_str()?
                    .strip_prefix("--config.custom-plugin-monitor=/config/")
            })
            .unwrap_or_else(|| panic!("{} reads no custom plugin config", c["name"]));
        read.push(config.to_string());
        let mounts = c["volumeMounts"].as_array().unwrap();
        let at = |path: &str| mounts.iter().any(|m| m["mountPath"] == path);
        assert!(at("/opt/faultline") && at("/config"), "{}", c["name"]);
        let limits = &c["resources"]["limits"];
        assert!(
            limits["cpu"].is_string() && limits["memory"].is_string(),
            "{c}"
        );
    }
    read.sort();
    let mut want: Vec<String> = CONFIGS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(read, want);
}
