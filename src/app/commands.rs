//! The client-side subcommands: `status`, `restart`, `stop`, `logs` and `metrics` talk to running
//! instances over their control sockets (see [`crate::control`]).

use std::path::PathBuf;

use crate::control::client::call;
use crate::control::discovery as instance;
use crate::control::{Command, Response};
use crate::exit;
use crate::observe::status::{self, Status};

fn socket_of(name: &str) -> Result<PathBuf, u8> {
    instance::find(name).ok_or_else(|| {
        eprintln!("mcpvisor: no running instance named `{name}`; `mcpvisor status` lists the running ones");
        exit::UNAVAILABLE
    })
}

fn ask(name: &str, path: &std::path::Path, command: Command) -> Result<Response, u8> {
    match call(path, command) {
        Ok(r) if r.ok => Ok(r),
        Ok(r) => {
            eprintln!("mcpvisor: {name}: {}", r.error.unwrap_or_else(|| "request failed".into()));
            Err(exit::FAILURE)
        }
        Err(e) => {
            eprintln!("mcpvisor: cannot reach `{name}` at {}: {e}", path.display());
            Err(exit::UNAVAILABLE)
        }
    }
}

fn get_status(name: &str, path: &std::path::Path) -> Result<Status, u8> {
    ask(name, path, Command::Status)?.status.map(|s| *s).ok_or(exit::FAILURE)
}

pub fn status(name: Option<&str>, json: bool) -> u8 {
    let statuses: Vec<Status> = match name {
        Some(n) => match socket_of(n).and_then(|p| get_status(n, &p)) {
            Ok(s) => vec![s],
            Err(code) => return code,
        },
        None => instance::live_instances().iter().filter_map(|(n, p)| get_status(n, p).ok()).collect(),
    };
    if statuses.is_empty() {
        if json {
            println!("[]");
        } else {
            eprintln!("mcpvisor: no running instances found");
        }
        return exit::UNAVAILABLE;
    }
    let output = match (json, name.is_some()) {
        (true, true) => serde_json::to_string_pretty(&statuses[0]),
        (true, false) => serde_json::to_string_pretty(&statuses),
        (false, true) => Ok(statuses[0].render()),
        (false, false) => Ok(status::render_list(&statuses)),
    };
    match output {
        Ok(text) => println!("{}", text.trim_end()),
        Err(e) => {
            eprintln!("mcpvisor: {e}");
            return exit::FAILURE;
        }
    }
    if statuses.iter().all(Status::is_ready) {
        exit::OK
    } else {
        exit::FAILURE
    }
}

/// `restart`, `stop`: print the instance's answer.
pub fn simple(name: &str, command: Command) -> u8 {
    match socket_of(name).and_then(|p| ask(name, &p, command)) {
        Ok(r) => {
            println!("{name}: {}", r.message.unwrap_or_else(|| "done".into()));
            exit::OK
        }
        Err(code) => code,
    }
}

pub fn logs(name: &str, lines: usize) -> u8 {
    match socket_of(name).and_then(|p| ask(name, &p, Command::Logs { lines })) {
        Ok(r) => {
            for line in r.lines.unwrap_or_default() {
                println!("{line}");
            }
            exit::OK
        }
        Err(code) => code,
    }
}

pub fn metrics(name: Option<&str>) -> u8 {
    let targets = match name {
        Some(n) => match socket_of(n) {
            Ok(p) => vec![(n.to_owned(), p)],
            Err(code) => return code,
        },
        None => instance::live_instances(),
    };
    if targets.is_empty() {
        eprintln!("mcpvisor: no running instances found");
        return exit::UNAVAILABLE;
    }
    let mut code = exit::OK;
    let mut texts = Vec::new();
    for (n, p) in targets {
        match ask(&n, &p, Command::Metrics) {
            Ok(r) => texts.push(r.metrics.unwrap_or_default()),
            Err(c) => code = c,
        }
    }
    print!("{}", crate::observe::metrics::merge(&texts));
    code
}

/// `reload`: every daemon's answer, one line each.
pub fn reload() -> u8 {
    let daemons = instance::daemon_sockets();
    if daemons.is_empty() {
        eprintln!("mcpvisor: no `mcpvisor serve` daemon is running");
        return exit::UNAVAILABLE;
    }
    let mut code = exit::OK;
    for path in daemons {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        match ask(&name, &path, Command::Reload) {
            Ok(r) => println!("{name}: {}", r.message.unwrap_or_else(|| "reloaded".into())),
            Err(c) => code = code.max(c),
        }
    }
    code
}
