//! Health checks (Docker's HEALTHCHECK): what to run, and the state the shim keeps.
//!
//! The shim runs the check command inside the container every `interval`
//! (through `skiff exec`), kills it after `timeout`, and counts failures:
//! `starting` until the first success (failures during `start_period` do
//! not count), `healthy` after a success, `unhealthy` after `retries`
//! consecutive failures.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Docker's defaults.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Docker's default timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Docker's default retries.
pub const DEFAULT_RETRIES: u32 = 3;
/// Results kept in the log, as Docker.
const MAX_LOG: usize = 5;
/// Output kept per result, as Docker.
pub const MAX_OUTPUT: usize = 4096;

/// A container's health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// argv of the check, run inside the container.
    pub test: Vec<String>,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Grace period during which failures do not count.
    pub start_period: Duration,
    /// Consecutive failures that make the container unhealthy.
    pub retries: u32,
}

impl HealthConfig {
    /// From Docker's image-config form: `Test` (`["CMD", ...]`, `["CMD-SHELL", "..."]`,
    /// `["NONE"]`), durations in nanoseconds (0 = default). `None` when disabled.
    pub fn from_docker(value: &serde_json::Value) -> Option<HealthConfig> {
        let test: Vec<String> = value
            .get("Test")?
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        let argv = match test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
                vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
            }
            _ => return None,
        };
        let nanos = |key: &str, default: Duration| {
            value
                .get(key)
                .and_then(|v| v.as_u64())
                .filter(|n| *n > 0)
                .map(Duration::from_nanos)
                .unwrap_or(default)
        };
        Some(HealthConfig {
            test: argv,
            interval: nanos("Interval", DEFAULT_INTERVAL),
            timeout: nanos("Timeout", DEFAULT_TIMEOUT),
            start_period: nanos("StartPeriod", Duration::ZERO),
            retries: value
                .get("Retries")
                .and_then(|v| v.as_u64())
                .filter(|n| *n > 0)
                .map(|n| n as u32)
                .unwrap_or(DEFAULT_RETRIES),
        })
    }
}

/// Docker's health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No result that counts yet.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

impl HealthStatus {
    /// The word `docker ps` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    /// When it started.
    pub start: DateTime<Utc>,
    /// When it ended.
    pub end: DateTime<Utc>,
    /// Its exit code (-1 when it timed out or could not run).
    pub exit_code: i32,
    /// The first 4 KiB of its output.
    pub output: String,
}

/// What `docker inspect` shows under `State.Health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthState {
    /// Current status.
    pub status: HealthStatus,
    /// Consecutive failures.
    pub failing_streak: u32,
    /// The last results, oldest first.
    pub log: Vec<HealthResult>,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: Vec::new(),
        }
    }
}

impl HealthState {
    /// Folds in one result; `in_start_period` failures do not count.
    pub fn record(&mut self, result: HealthResult, retries: u32, in_start_period: bool) {
        if result.exit_code == 0 {
            self.status = HealthStatus::Healthy;
            self.failing_streak = 0;
        } else if !in_start_period {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push(result);
        if self.log.len() > MAX_LOG {
            self.log.remove(0);
        }
    }
}

/// Parses a Go duration as Docker's flags take it (`30s`, `1m30s`, `500ms`, `2h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {text:?} (e.g. 30s, 1m30s, 500ms)");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(total);
    }
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let value: f64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += Duration::from_secs_f64(value * seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_forms_parse() {
        let v = serde_json::json!({"Test": ["CMD-SHELL", "test -f /ok"], "Interval": 1_000_000_000u64, "Retries": 2});
        let h = HealthConfig::from_docker(&v).unwrap();
        assert_eq!(h.test, vec!["/bin/sh", "-c", "test -f /ok"]);
        assert_eq!(h.interval, Duration::from_secs(1));
        assert_eq!(h.timeout, DEFAULT_TIMEOUT);
        assert_eq!(h.retries, 2);
        assert!(HealthConfig::from_docker(&serde_json::json!({"Test": ["NONE"]})).is_none());
        let exec =
            HealthConfig::from_docker(&serde_json::json!({"Test": ["CMD", "true"]})).unwrap();
        assert_eq!(exec.test, vec!["true"]);
    }

    #[test]
    fn streaks_turn_unhealthy_and_back() {
        let r = |code| HealthResult {
            start: Utc::now(),
            end: Utc::now(),
            exit_code: code,
            output: String::new(),
        };
        let mut s = HealthState::default();
        s.record(r(1), 2, true);
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Starting, 0));
        s.record(r(1), 2, false);
        assert_eq!(s.status, HealthStatus::Starting);
        s.record(r(1), 2, false);
        assert_eq!(s.status, HealthStatus::Unhealthy);
        s.record(r(0), 2, false);
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Healthy, 0));
        for _ in 0..10 {
            s.record(r(0), 2, false);
        }
        assert_eq!(s.log.len(), MAX_LOG);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10").is_err());
    }
}
