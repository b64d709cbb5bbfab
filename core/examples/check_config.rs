//! Reads a plugin configuration (JSON) on stdin and checks it with the plugin's own parser:
//! prints `ok` and exits 0, or prints the error the plugin would log and exits 1. Used by the
//! deployment tests on every pluginConfig the chart and `wasmplugin/` ship.
use meshtrace_core::config::Config;
use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    match Config::parse(&input) {
        Ok(_) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}
