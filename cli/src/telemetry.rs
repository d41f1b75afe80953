//! Exporting traces over OTLP (docs/reference/configuration.md#tracing).
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-only
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `ORDO_OTLP_ENDPOINT`) is set and
//! `OTEL_SDK_DISABLED` is not `true`. The protocol is
//! `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: `http/protobuf` (default) or
//! `grpc`. The service name is `OTEL_SERVICE_NAME` (or `service.name` in
//! `OTEL_RESOURCE_ATTRIBUTES`), else `ordo-<role>`. The SDK reads the other
//! standard variables itself: `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` and `_TIMEOUT`.
//!
//! Spans are batched and exported by a task on the process's tokio runtime
//! (the SDK's default batch processor runs on a thread of its own, where
//! neither hyper nor tonic has a runtime to run on).

use std::time::Duration;

use anyhow::{bail, Context as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// Where and how to export, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The endpoint as configured (`None`: the traces-only variable, which
    /// the exporter reads itself).
    endpoint: Option<String>,
    protocol: Protocol,
    service_name: Option<String>,
}

impl Export {
    /// What the environment asks for (`Ok(None)`: tracing off).
    pub fn from_env(role: &str) -> anyhow::Result<Option<Export>> {
        Export::from_vars(role, |name| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        })
    }

    fn from_vars(
        role: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Export>> {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let traces_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT").or_else(|| var("ORDO_OTLP_ENDPOINT"));
        if traces_endpoint.is_none() && endpoint.is_none() {
            return Ok(None);
        }
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
            .map(str::trim)
        {
            None | Some("http/protobuf") => Protocol::HttpBinary,
            Some("grpc") => Protocol::Grpc,
            Some(other) => bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use http/protobuf or grpc"
            ),
        };
        let named = var("OTEL_SERVICE_NAME").is_some()
            || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| {
                attributes
                    .split(',')
                    .any(|kv| kv.trim_start().starts_with("service.name="))
            });
        let endpoint = match (&traces_endpoint, endpoint) {
            // The traces-only variable is a full URL, read by the exporter.
            (Some(_), _) => None,
            (None, Some(base)) => Some(match protocol {
                // The general variable is a base URL: http/protobuf posts
                // to its `/v1/traces`.
                Protocol::HttpBinary => format!("{}/v1/traces", base.trim_end_matches('/')),
                _ => base,
            }),
            (None, None) => None,
        };
        if let Some(endpoint) = &endpoint {
            endpoint
                .parse::<http::Uri>()
                .ok()
                .filter(|uri| uri.scheme().is_some() && uri.host().is_some())
                .with_context(|| {
                    format!(
                        "the OTLP endpoint {endpoint:?} is not a URL such as http://collector:4318"
                    )
                })?;
        }
        Ok(Some(Export {
            endpoint,
            protocol,
            service_name: (!named).then(|| format!("ordo-{role}")),
        }))
    }
}

/// The installed exporter; [`Tracing::shutdown`] sends what is left.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Installs the exporting tracer provider when the environment asks for
    /// one (inside the tokio runtime).
    pub fn init(role: &str) -> anyhow::Result<Tracing> {
        let Some(export) = Export::from_env(role)? else {
            return Ok(Tracing { provider: None });
        };
        let exporter = match export.protocol {
            Protocol::Grpc => {
                let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                match &export.endpoint {
                    Some(endpoint) => builder.with_endpoint(endpoint),
                    None => builder,
                }
                .build()
            }
            _ => {
                let builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                match &export.endpoint {
                    Some(endpoint) => builder.with_endpoint(endpoint),
                    None => builder,
                }
                .build()
            }
        }
        .context("cannot set up the OTLP trace exporter")?;
        let mut resource = Resource::builder();
        if let Some(name) = &export.service_name {
            resource = resource.with_service_name(name.clone());
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build(),
            )
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        eventstore::telemetry::enable();
        tracing::info!(
            endpoint = export.endpoint.as_deref().unwrap_or("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            protocol = ?export.protocol,
            "exporting traces over OTLP"
        );
        Ok(Tracing {
            provider: Some(provider),
        })
    }

    /// Exports the spans still queued (waiting at most a few seconds).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushing = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(Duration::from_secs(5), flushing).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not export the last spans"),
            _ => tracing::warn!("gave up exporting the last spans"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn export(vars: &[(&str, &str)]) -> anyhow::Result<Option<Export>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Export::from_vars("relay", |name| vars.get(name).cloned())
    }

    #[test]
    fn off_without_an_endpoint_or_when_the_sdk_is_disabled() {
        assert_eq!(export(&[]).unwrap(), None);
        assert_eq!(export(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        assert_eq!(
            export(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ])
            .unwrap(),
            None
        );
    }

    #[test]
    fn http_protobuf_by_default_posting_to_v1_traces() {
        let e = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(e.protocol, Protocol::HttpBinary);
        assert_eq!(
            e.endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(e.service_name.as_deref(), Some("ordo-relay"));
        let e = export(&[("ORDO_OTLP_ENDPOINT", "http://c:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(e.endpoint.as_deref(), Some("http://c:4318/v1/traces"));
    }

    #[test]
    fn grpc_takes_the_endpoint_as_it_is() {
        let e = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(e.protocol, Protocol::Grpc);
        assert_eq!(e.endpoint.as_deref(), Some("http://collector:4317"));
    }

    #[test]
    fn the_service_name_is_left_to_the_standard_variables_when_they_set_one() {
        let e = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment=prod, service.name=shop",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(e.service_name, None);
    }

    #[test]
    fn a_bad_protocol_or_endpoint_is_a_clear_error() {
        let e = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("http/protobuf or grpc"), "{e}");
        let e = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector")]).unwrap_err();
        assert!(e.to_string().contains("not a URL"), "{e}");
    }
}
