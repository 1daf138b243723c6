//! The alerting rules shipped in `deploy/prometheus-rules.yaml`, checked and unit-tested by the
//! real `promtool` (Debian's prometheus 2.42, installed by `scripts/setup.sh`): `check rules`
//! parses every expression and template; `test rules` runs `deploy/prometheus-rules.test.yaml`,
//! which has, for every alert, series where it fires and series where it must not.
use std::process::Command;

fn promtool(test: &str, args: &[&str]) -> Option<(bool, String)> {
    let tool = testkit::setup_tool(test, "promtool")?;
    let out = Command::new(tool).args(args).current_dir(testkit::project_root()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), text))
}

#[test]
fn promtool_checks_the_rules() {
    let Some((ok, text)) = promtool("alert_rules::promtool_checks_the_rules", &["check", "rules", "deploy/prometheus-rules.yaml"]) else { return };
    assert!(ok, "{text}");
    // Every alert the rules file names is checked.
    let rules = std::fs::read_to_string(testkit::project_root().join("deploy/prometheus-rules.yaml")).unwrap();
    let alerts = rules.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert!(text.contains(&format!("SUCCESS: {alerts} rules found")), "{text}");
}

#[test]
fn promtool_unit_tests_every_alert() {
    let Some((ok, text)) = promtool("alert_rules::promtool_unit_tests_every_alert", &["test", "rules", "deploy/prometheus-rules.test.yaml"]) else { return };
    assert!(ok, "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
    // Every alert has a test case that expects it to fire.
    let root = testkit::project_root();
    let rules = std::fs::read_to_string(root.join("deploy/prometheus-rules.yaml")).unwrap();
    let tests = std::fs::read_to_string(root.join("deploy/prometheus-rules.test.yaml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim_start().strip_prefix("- alert:")).map(str::trim) {
        let cases: Vec<&str> = tests.split("- eval_time:").filter(|c| c.contains(&format!("alertname: {alert}\n"))).collect();
        assert!(cases.iter().any(|c| c.contains("exp_alerts:")), "{alert}: no test case where it fires");
    }
}
