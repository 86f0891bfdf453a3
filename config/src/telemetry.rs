//! Trace export over OTLP: off unless an endpoint is given. `polaris serve` reads it from
//! the `telemetry:` section and the environment; the sidecar and `polaris agent run`, which
//! have no YAML file, from a flag and the environment. The environment variables are the
//! OpenTelemetry ones, so a deployment that already sets them needs nothing else.

use serde::Deserialize;

use crate::env::Env;
use crate::error::{ConfigError, Origin};

/// The collector's OTLP/HTTP base URL (spans go to `…/v1/traces`).
const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The name the spans are exported under.
const SERVICE_VAR: &str = "OTEL_SERVICE_NAME";
/// The share of new traces kept, 0 to 1 (the `traceidratio` sampler's argument).
const RATIO_VAR: &str = "OTEL_TRACES_SAMPLER_ARG";

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, without a trailing `/` (e.g.
    /// `http://127.0.0.1:4318`).
    pub otlp_endpoint: String,
    /// `service.name` of every span this process exports.
    pub service_name: String,
    /// The share of traces started here that are kept (0 to 1). A trace continued from a
    /// caller keeps the caller's decision.
    pub sample_ratio: f64,
}

impl TelemetryConfig {
    /// Where spans are posted: the endpoint's `/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.otlp_endpoint)
    }

    /// For a process without a configuration file (the sidecar, `polaris agent run`): the
    /// endpoint from `flag` (named `flag_name`), else `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// `OTEL_SERVICE_NAME`, else `service`; `OTEL_TRACES_SAMPLER_ARG`, else 1. `None`
    /// when no endpoint is given.
    pub fn from_flag(
        flag: Option<&str>,
        flag_name: &'static str,
        env: &Env,
        service: &str,
    ) -> Result<Option<TelemetryConfig>, ConfigError> {
        RawTelemetry::default().resolve(
            flag.map(|f| (f, Origin::Flag(flag_name))),
            env,
            service,
            &Origin::Rule,
        )
    }
}

/// The `telemetry:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTelemetry {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    sample_ratio: Option<f64>,
}

impl RawTelemetry {
    /// The section with the environment over it (and `flag` over both); `file` is where
    /// the section came from, for errors.
    pub(crate) fn resolve(
        &self,
        flag: Option<(&str, Origin)>,
        env: &Env,
        service: &str,
        file: &Origin,
    ) -> Result<Option<TelemetryConfig>, ConfigError> {
        let endpoint = flag
            .map(|(v, o)| (v.to_owned(), o))
            .or_else(|| {
                env.get(ENDPOINT_VAR)
                    .map(|v| (v.to_owned(), Origin::Env(ENDPOINT_VAR)))
            })
            .or_else(|| self.otlp_endpoint.clone().map(|v| (v, file.clone())));
        let Some((endpoint, origin)) = endpoint else {
            return Ok(None);
        };
        let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if parsed.is_none() {
            return Err(ConfigError::new(
                origin,
                "telemetry.otlp_endpoint",
                format!(
                    "{endpoint:?} is not an http(s) URL such as http://127.0.0.1:4318 (the \
                     collector's OTLP/HTTP address; spans go to its /v1/traces)"
                ),
            ));
        }
        let (service_name, origin) = match (env.get(SERVICE_VAR), &self.service_name) {
            (Some(s), _) => (s.to_owned(), Origin::Env(SERVICE_VAR)),
            (None, Some(s)) => (s.clone(), file.clone()),
            (None, None) => (service.to_owned(), Origin::Rule),
        };
        if service_name.trim().is_empty() {
            return Err(ConfigError::new(
                origin,
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        let (ratio, origin) = match (env.get(RATIO_VAR), self.sample_ratio) {
            (Some(s), _) => (
                s.trim().parse::<f64>().unwrap_or(f64::NAN),
                Origin::Env(RATIO_VAR),
            ),
            (None, Some(r)) => (r, file.clone()),
            (None, None) => (1.0, Origin::Rule),
        };
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::new(
                origin,
                "telemetry.sample_ratio",
                "must be a number from 0 (keep no new trace) to 1 (keep every trace)",
            ));
        }
        Ok(Some(TelemetryConfig {
            otlp_endpoint: endpoint,
            service_name,
            sample_ratio: ratio,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn off_without_an_endpoint_and_the_flag_beats_the_environment() {
        assert_eq!(
            TelemetryConfig::from_flag(None, "--otlp-endpoint", &env(&[]), "polaris-sidecar")
                .unwrap(),
            None
        );
        let c = TelemetryConfig::from_flag(
            None,
            "--otlp-endpoint",
            &env(&[(ENDPOINT_VAR, "http://collector:4318/")]),
            "polaris-sidecar",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.otlp_endpoint, "http://collector:4318");
        assert_eq!(c.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!(
            (c.service_name.as_str(), c.sample_ratio),
            ("polaris-sidecar", 1.0)
        );
        let c = TelemetryConfig::from_flag(
            Some("https://otel.example:4318"),
            "--otlp-endpoint",
            &env(&[
                (ENDPOINT_VAR, "http://collector:4318"),
                (SERVICE_VAR, "laptop-sidecar"),
                (RATIO_VAR, "0.25"),
            ]),
            "polaris-sidecar",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.otlp_endpoint, "https://otel.example:4318");
        assert_eq!(
            (c.service_name.as_str(), c.sample_ratio),
            ("laptop-sidecar", 0.25)
        );
    }

    #[test]
    fn bad_values_name_where_they_came_from() {
        let e =
            TelemetryConfig::from_flag(Some("collector:4318"), "--otlp-endpoint", &env(&[]), "s")
                .unwrap_err()
                .to_string();
        assert!(
            e.starts_with("--otlp-endpoint: key `telemetry.otlp_endpoint`"),
            "{e}"
        );
        let e = TelemetryConfig::from_flag(
            None,
            "--otlp-endpoint",
            &env(&[(ENDPOINT_VAR, "http://c:4318"), (RATIO_VAR, "all")]),
            "s",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(RATIO_VAR) && e.contains("sample_ratio"),
            "{e}"
        );
    }
}
