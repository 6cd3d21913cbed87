//! The runtimes' side of injection: the argv of every container the webhook injects, parsed by the binary's own
//! command line ([`entourage::cli::Cli`]) and checked as each program checks its flags before it opens anything.

use entourage::cli::{Cli, Command};
use entourage::core::config::Config;
use serde_json::Value;

/// The argv a container (or an exec probe) runs the entourage binary with: its command when that names the binary,
/// else the image's entrypoint when the image is `entourage_image`; then its args.
pub fn entourage_argv(container: &Value, entourage_image: &str) -> Option<Vec<String>> {
    let words =
        |v: &Value| -> Option<Vec<String>> { v.as_array()?.iter().map(|w| w.as_str().map(String::from)).collect() };
    let mut argv = match container.get("command").and_then(words) {
        Some(command) if command.first().is_some_and(|c| c.ends_with("entourage")) => command,
        Some(_) => return None,
        None if container["image"] == entourage_image => vec!["entourage".to_string()],
        None => return None,
    };
    argv.extend(container.get("args").and_then(words).unwrap_or_default());
    Some(argv)
}

/// Parses `argv` with the binary's own command line, then checks each value as the program does before it opens
/// anything: a container that passes this starts (what is left is I/O: files, sockets, Secrets).
pub fn starts(argv: &[String]) -> Result<&'static str, String> {
    let cli = <Cli as clap::Parser>::try_parse_from(argv).map_err(|e| e.to_string())?;
    match cli.command {
        Command::Adapt(args) => args.check().map(|()| "adapt").map_err(|e| e.to_string()),
        Command::Ambassador(args) => {
            entourage::ambassador::config::Upstream::parse(&args.upstream).map_err(|e| e.to_string())?;
            if let Some(url) = &args.oauth2_token_url {
                entourage::core::annotations::check_token_url(url).map_err(|rule| format!("{url:?} {rule}"))?;
                // `OAuth2::new` parses the URL once more, with the oauth2 crate's URL parser.
                oauth2::TokenUrl::new(url.clone()).map_err(|e| format!("{url:?}: {e}"))?;
            }
            Ok("ambassador")
        }
        Command::Stream(_) => Ok("stream"),
        Command::Started(_) => Ok("started"),
        _ => Err("not a program the webhook injects".into()),
    }
}

/// Every argv the injected containers of `patched` (those not in `input`) run the entourage binary with, their
/// exec probes included, each with its container's name.
pub fn injected_argv(input: &Value, patched: &Value, config: &Config) -> Vec<(String, Vec<String>)> {
    let containers = |pod: &Value| -> Vec<Value> {
        ["containers", "initContainers"]
            .iter()
            .flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let original = containers(input);
    let mut out = Vec::new();
    for container in containers(patched).iter().filter(|c| !original.contains(c)) {
        let name = container["name"].as_str().unwrap_or_default().to_string();
        let probes = ["startupProbe", "readinessProbe", "livenessProbe"]
            .iter()
            .filter_map(|p| container.pointer(&format!("/{p}/exec")))
            .filter_map(|exec| entourage_argv(exec, ""));
        for argv in entourage_argv(container, &config.images.entourage)
            .into_iter()
            .chain(probes)
        {
            out.push((name.clone(), argv));
        }
    }
    out
}
