// Package otelals is weft proxy's OpenTelemetry access logger (Envoy's
// envoy.access_loggers.open_telemetry, Istio's envoyOtelAls provider): it
// renders a request's or TCP connection's LogRecord body and attributes
// from Envoy command operators (package logformat), batches LogRecords per
// collector and exports them over OTLP/gRPC
// (opentelemetry.proto.collector.logs.v1.LogsService/Export) with a
// bounded queue that drops and counts instead of blocking requests.
package otelals
