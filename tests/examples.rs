//! The shipped examples stay true: every metric the Grafana dashboard and the Prometheus alert
//! rules use is exported by a live instance, and the client configs are valid JSON that run
//! the server through `mcpvisor run --`.

mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::*;

fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("mcpvisor_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = &text[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            name = name.strip_suffix(suffix).unwrap_or(name);
        }
        names.insert(name.to_owned());
        i = end;
    }
    names
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dashboard = std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap();
    serde_json::from_str::<Value>(&dashboard).expect("dashboard is JSON");
    let alerts = std::fs::read_to_string(root.join("prometheus-alerts.yml")).unwrap();

    let mut v = Visor::test_server(Vec::<String>::new()).args(["--name", "ex"]).spawn();
    v.initialize();
    v.request(1, "echo", json!({}));
    v.wait_control();
    let exported = String::from_utf8(v.ctl(&["metrics", "ex"]).stdout).unwrap();
    let families: BTreeSet<String> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    for (file, text) in [("grafana-dashboard.json", &dashboard), ("prometheus-alerts.yml", &alerts)] {
        let used = metric_names_in(text);
        assert!(!used.is_empty(), "{file} uses no metrics?");
        for name in used {
            assert!(families.contains(&name), "{file} uses {name}, which mcpvisor does not export");
        }
    }
    // And the dashboard covers the headline metrics.
    for needed in [
        "mcpvisor_state",
        "mcpvisor_restarts_total",
        "mcpvisor_request_errors_total",
        "mcpvisor_request_duration_seconds",
    ] {
        assert!(dashboard.contains(needed) && alerts.contains(needed), "{needed} missing from the examples");
    }
}

#[test]
fn client_configs_wrap_servers_with_mcpvisor_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for file in ["claude_desktop_config.json", "vscode-mcp.json", "cursor-mcp.json"] {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(root.join(file)).unwrap()).expect(file);
        let servers = v.get("mcpServers").or_else(|| v.get("servers")).and_then(Value::as_object).expect(file);
        for (name, s) in servers {
            assert_eq!(s["command"], json!("mcpvisor"), "{file}: {name}");
            let args: Vec<&str> = s["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            assert_eq!(args[0], "run", "{file}: {name}");
            let dashdash = args.iter().position(|a| *a == "--").expect("`--` before the server command");
            assert!(dashdash + 1 < args.len(), "{file}: {name} has no server command");
        }
    }
}

#[test]
fn the_example_config_file_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mcpvisor.toml");
    let (flags, command) = mcpvisor::cli::config_file::flags_from_file(&path).expect("example config parses");
    assert!(!flags.is_empty());
    assert_eq!(command[0], "npx");
}

#[test]
fn the_example_daemon_file_is_valid() {
    use clap::Parser;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/servers.toml");
    let argv: Vec<std::ffi::OsString> = vec!["mcpvisor".into(), "serve".into(), "--config".into(), path.into()];
    let mcpvisor::cli::Command::Serve(args) = mcpvisor::cli::Cli::try_parse_from(&argv).expect("parses").command else {
        panic!("not serve")
    };
    let (config, _) = args.daemon_config(&argv).expect("the example daemon file is valid");
    let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["everything", "time"]);
}

#[test]
fn the_kubernetes_servers_file_is_valid_with_the_statefulsets_arguments() {
    use clap::Parser;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("deploy/kubernetes/base/servers.toml");
    // The container's arguments, as deploy/kubernetes/base/statefulset.yaml gives them.
    let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/base/statefulset.yaml")).expect("manifest");
    let mut argv: Vec<std::ffi::OsString> = vec!["mcpvisor".into()];
    let args = manifest.split("args:\n").nth(1).expect("the container's args");
    for line in args.lines().map(str::trim).take_while(|l| l.starts_with("- ") || l.starts_with('#')) {
        if let Some(arg) = line.strip_prefix("- ") {
            argv.push(
                arg.replace("$(POD_NAME)", "mcpvisor-0")
                    .replace("/etc/mcpvisor/servers.toml", &path.display().to_string())
                    .into(),
            );
        }
    }
    assert!(argv.len() > 5, "{argv:?}");
    let mcpvisor::cli::Command::Serve(args) = mcpvisor::cli::Cli::try_parse_from(&argv).expect("parses").command else {
        panic!("not serve: {argv:?}")
    };
    let (config, _) = args.daemon_config(&argv).expect("the Kubernetes servers file is valid");
    let http = config.http.expect("--http");
    assert_eq!(http.replica.as_deref(), Some("mcpvisor-0"));
    assert_eq!(config.servers[0].instance.standby, 1);
}
