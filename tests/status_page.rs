//! The daemon's status page (`/` on the HTTP front) in a real browser: headless Chromium
//! (Debian's `chromium`) driven by playwright-core (`tests/status_page/check.cjs`). The page
//! shows every server of a running daemon; a server at its restart limit shows as failed with its
//! last stderr line; a kill -9 of a server turns its row to restarting and back to ready, without
//! a reload. The API behind it answers only with a token when tokens are set, and its restart
//! and stop only exist with an admin token.
//!
//! playwright-core comes with the interop peers (`scripts/setup-interop`); Chromium is a Debian
//! package that `.ci/run` installs. Without them the browser test says why and is skipped, unless
//! `MCPVISOR_REQUIRE_BROWSER=1` (as in CI).

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::daemon::Daemon;
use support::*;

/// `steady` backs off 2.5–5 s after a crash (the backoff is jittered into [d/2, d]): long enough
/// for the page, which polls every second, to show it on a loaded machine.
fn config(extra_top: &str) -> String {
    let server = test_server_bin().display().to_string();
    format!(
        "http = \"127.0.0.1:0\"\n{extra_top}\n\
         [servers.steady]\ncommand = [{server:?}]\nshare = \"shared\"\nstart = \"eager\"\nbackoff-initial = \"5s\"\n\
         [servers.broken]\ncommand = [{server:?}, \"--exit-at-start\", \"3\"]\nshare = \"shared\"\nstart = \"eager\"\n\
         max-restarts = 1\nbackoff-initial = \"10ms\"\n\
         [servers.lazy]\ncommand = [{server:?}]\n"
    )
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl").args(["-s", "-w", "\n%{http_code}"]).args(args).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn the_status_page_shows_every_server_live_in_a_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let interop = root.join("target/interop");
    let have_playwright = interop.join("node_modules/playwright-core").exists();
    let have_chromium = std::path::Path::new("/usr/bin/chromium").exists();
    if !(have_playwright && have_chromium) {
        let why = format!("playwright-core installed: {have_playwright}, /usr/bin/chromium: {have_chromium}");
        assert!(std::env::var_os("MCPVISOR_REQUIRE_BROWSER").is_none(), "the browser test cannot run: {why}");
        eprintln!("skipping the browser test: {why}");
        return;
    }
    let daemon = Daemon::start(&config(""), &["steady", "broken", "lazy"]);
    let url = format!("http://{}/", daemon.http_addr());
    let script = root.join("tests/status_page/check.cjs");
    let out = Command::new("node").arg(&script).arg(&interop).arg(&url).output().expect("run node");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok"),
        "stdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
}

#[test]
fn the_api_is_the_status_of_every_server_behind_the_fronts_token_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (read, admin) = (dir.path().join("read"), dir.path().join("admin"));
    std::fs::write(&read, "reader-token\n").expect("write");
    std::fs::write(&admin, "admin-token\n").expect("write");
    let top = format!("http-token-file = {:?}\n", read.display().to_string());
    let daemon = Daemon::start(&config(&top), &["steady", "broken", "lazy"]);
    let addr = daemon.http_addr();
    let api = format!("http://{addr}/api/status");

    let (code, page) = curl(&[&format!("http://{addr}/")]);
    assert_eq!(code, 200, "the page itself holds no data and needs no token");
    assert!(page.contains("<title>mcpvisor</title>") && page.contains("content=\"0\""), "read-only: no admin buttons");
    assert_eq!(curl(&[&api]).0, 401);
    assert_eq!(curl(&["-X", "POST", &format!("http://{addr}/")]).0, 405, "a POST to / is not the page");
    let (code, body) = curl(&["-H", "Authorization: Bearer reader-token", &api]);
    assert_eq!(code, 200);
    let statuses: Value = serde_json::from_str(&body).expect("JSON");
    let names: Vec<&str> = statuses.as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["broken", "lazy", "steady"], "every server, by name");
    assert!(statuses[0]["restarts"]["ages_secs"].is_array() && statuses[0]["errors"].is_u64(), "{}", statuses[0]);
    let restart = format!("http://{addr}/api/servers/steady/restart");
    let (code, body) = curl(&["-X", "POST", "-H", "Authorization: Bearer reader-token", &restart]);
    assert_eq!(code, 403, "no admin tokens: read-only ({body})");
    let (code, body) =
        curl(&["-H", "Authorization: Bearer reader-token", &format!("http://{addr}/api/servers/nope/logs")]);
    assert_eq!(code, 404, "{body}");
    let (code, _) = curl(&["-H", "Host: evil.example", &format!("http://{addr}/")]);
    assert_eq!(code, 403, "the Host rule holds for the page too");
    drop(daemon);

    // With admin tokens the page offers restart and stop, and they work with an admin token only.
    let top = format!("http-admin-token-file = {:?}\n", admin.display().to_string());
    let daemon = Daemon::start(&config(&top), &["steady", "broken", "lazy"]);
    let addr = daemon.http_addr();
    assert!(curl(&[&format!("http://{addr}/status")]).1.contains("content=\"1\""));
    let restart = format!("http://{addr}/api/servers/steady/restart");
    assert_eq!(curl(&["-X", "POST", &restart]).0, 401);
    let (code, body) = curl(&["-X", "POST", "-H", "Authorization: Bearer admin-token", &restart]);
    assert_eq!(code, 200, "{body}");
    daemon.wait_status("steady", "the restarted process", |s| s["processes"][0]["generation"] == serde_json::json!(2));
}
