//! `skiff token create|list|delete`: bootstrap token Secrets (skiff-apiserver's
//! `bootstrap_token` format) through the API, as `kubeadm token` does.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::Kubeconfig;
use skiff_apiserver::bootstrap_token::{self, BootstrapToken, TokenInfo};
use skiff_controllers::connect::{connect, Target};

use super::Context;
use crate::cli::{ComponentArgs, TokenCommand, TokenCreateArgs};

/// Runs a `token` subcommand.
pub fn token(ctx: &Context, command: TokenCommand) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        match command {
            TokenCommand::Create(args) => create(ctx, args).await,
            TokenCommand::List(server) => list(ctx, &server).await,
            TokenCommand::Delete { ids, server } => delete(ctx, &server, &ids).await,
        }
    })
}

fn target(ctx: &Context, server: &ComponentArgs) -> Target {
    Target {
        kubeconfig: server.kubeconfig.clone(),
        root_kubeconfig: super::agent::root_kubeconfig(ctx),
        ..Default::default()
    }
}

async fn secrets(ctx: &Context, server: &ComponentArgs) -> Result<Api<Secret>> {
    let client = connect(&target(ctx, server)).await?;
    Ok(Api::namespaced(client, bootstrap_token::NAMESPACE))
}

async fn create(ctx: &Context, args: TokenCreateArgs) -> Result<()> {
    let token = match &args.token {
        Some(t) => t.parse::<BootstrapToken>()?,
        None => BootstrapToken::generate(),
    };
    let ttl = parse_ttl(&args.ttl).with_context(|| format!("--ttl {}", args.ttl))?;
    let groups: Vec<String> = args.groups.into_iter().filter(|g| !g.is_empty()).collect();
    let secret = token.to_secret(jiff::Timestamp::now(), ttl, &args.description, &groups)?;
    let secret: Secret = serde_json::from_value(secret)?;
    let api = secrets(ctx, &args.server).await?;
    api.create(&PostParams::default(), &secret)
        .await
        .with_context(|| format!("creating bootstrap token {}", token.id))?;
    if args.print_join_command {
        let kubeconfig = args
            .server
            .kubeconfig
            .clone()
            .unwrap_or_else(|| super::agent::root_kubeconfig(ctx));
        let (mut server, pin) = join_target(&kubeconfig)?;
        // A loopback address is of no use on another machine: the address the server
        // advertises (the `kubernetes` Endpoints, `--node-ip`) is, as kubeadm prints
        // its control-plane endpoint.
        if is_loopback_url(&server) {
            let client = connect(&target(ctx, &args.server)).await?;
            if let Some(advertised) = advertised_url(&client).await {
                server = advertised;
            }
        }
        println!(
            "skiff agent --server {server} --token {token} --discovery-token-ca-cert-hash {pin}"
        );
    } else {
        println!("{token}");
    }
    Ok(())
}

/// Whether `url`'s host is a loopback address or `localhost`.
fn is_loopback_url(url: &str) -> bool {
    let host = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => host,
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `https://ADDRESS:PORT` of the `kubernetes` Endpoints in `default`, unless loopback.
async fn advertised_url(client: &kube::Client) -> Option<String> {
    use k8s_openapi::api::core::v1::Endpoints;
    let endpoints: Endpoints = Api::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .ok()?;
    let subset = endpoints.subsets?.into_iter().next()?;
    let ip: std::net::IpAddr = subset.addresses?.first()?.ip.parse().ok()?;
    let port = subset.ports?.first()?.port;
    if ip.is_loopback() {
        return None;
    }
    Some(match ip {
        std::net::IpAddr::V4(v4) => format!("https://{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
    })
}

/// The server URL and CA pin of the current context of a kubeconfig.
fn join_target(path: &std::path::Path) -> Result<(String, String)> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| Some(&c.name) == kubeconfig.current_context.as_ref())
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| Some(&c.name) == context.as_ref())
        .or(kubeconfig.clusters.first())
        .and_then(|c| c.cluster.as_ref())
        .with_context(|| format!("{}: no cluster", path.display()))?;
    let server = cluster
        .server
        .clone()
        .with_context(|| format!("{}: the cluster has no server", path.display()))?;
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .context("decoding certificate-authority-data")?
        }
        (None, Some(file)) => std::fs::read(file).with_context(|| format!("reading {file}"))?,
        (None, None) => bail!(
            "{}: the cluster has no certificate authority to pin",
            path.display()
        ),
    };
    Ok((server, skiff_apiserver::ca_pin::pin_of_pem(&ca)?))
}

async fn list(ctx: &Context, server: &ComponentArgs) -> Result<()> {
    let list = secrets(ctx, server)
        .await?
        .list(&ListParams::default())
        .await
        .context("listing secrets in kube-system")?;
    let now = jiff::Timestamp::now();
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .filter_map(|s| TokenInfo::from_secret(&serde_json::to_value(s).ok()?))
        .map(|info| {
            let (ttl, expires) = match info.expires {
                Some(at) => (remaining(at, now), at.to_string()),
                None => ("<forever>".to_owned(), "<never>".to_owned()),
            };
            let or_none = |s: String| if s.is_empty() { "<none>".into() } else { s };
            vec![
                info.token.to_string(),
                ttl,
                expires,
                or_none(info.usages.join(",")),
                or_none(info.description),
                or_none(info.groups.join(",")),
            ]
        })
        .collect();
    super::containers::print_table(
        &[
            "TOKEN",
            "TTL",
            "EXPIRES",
            "USAGES",
            "DESCRIPTION",
            "EXTRA GROUPS",
        ],
        &rows,
    );
    Ok(())
}

async fn delete(ctx: &Context, server: &ComponentArgs, ids: &[String]) -> Result<()> {
    let api = secrets(ctx, server).await?;
    let mut failed = false;
    for given in ids {
        // A whole token names its id too.
        let id = given.split_once('.').map_or(given.as_str(), |(id, _)| id);
        let result = if bootstrap_token::is_token_id(id) {
            api.delete(&bootstrap_token::secret_name(id), &DeleteParams::default())
                .await
                .map(drop)
                .with_context(|| format!("deleting bootstrap token {id}"))
        } else {
            Err(anyhow::anyhow!(
                "{given:?} is not a bootstrap token id ([a-z0-9]{{6}}) or token"
            ))
        };
        match result {
            Ok(()) => println!("bootstrap token \"{id}\" deleted"),
            Err(e) => {
                eprintln!("Error: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(super::Exit::code(1));
    }
    Ok(())
}

/// A Go-style duration (`24h`, `1h30m`, `90s`); `None` for zero (never expires).
fn parse_ttl(text: &str) -> Result<Option<Duration>> {
    if text == "0" {
        return Ok(None);
    }
    let mut seconds: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => bail!("unknown unit {c:?}: use h, m and s, as in 24h or 1h30m"),
        };
        let n: u64 = number
            .parse()
            .with_context(|| format!("a number must come before {c:?}"))?;
        number.clear();
        seconds = seconds.saturating_add(n.saturating_mul(unit));
    }
    if !number.is_empty() || text.is_empty() {
        bail!("missing unit: use h, m or s, as in 24h or 1h30m");
    }
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

/// Time left until `at`, in its largest unit (`23h`, `5m`, `<expired>`).
fn remaining(at: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let left = at.as_second() - now.as_second();
    match left {
        ..=0 => "<expired>".into(),
        1..=59 => format!("{left}s"),
        60..=3599 => format!("{}m", left / 60),
        _ => format!("{}h", left / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_like_go_durations() {
        assert_eq!(parse_ttl("24h").unwrap(), Some(Duration::from_secs(86400)));
        assert_eq!(
            parse_ttl("1h30m5s").unwrap(),
            Some(Duration::from_secs(5405))
        );
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert_eq!(parse_ttl("0s").unwrap(), None);
        for bad in ["", "24", "1d", "h", "-1h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remaining_time_is_shown_in_its_largest_unit() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| jiff::Timestamp::from_second(1_000_000 + s).unwrap();
        assert_eq!(remaining(at(90_000), now), "25h");
        assert_eq!(remaining(at(120), now), "2m");
        assert_eq!(remaining(at(5), now), "5s");
        assert_eq!(remaining(at(-5), now), "<expired>");
    }

    #[test]
    fn loopback_servers_are_recognised() {
        for url in [
            "https://127.0.0.1:6443",
            "https://localhost:6443",
            "https://[::1]:6443",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "https://192.0.2.10:6443",
            "https://server.example:6443",
            "https://[fd00::1]:6443",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
