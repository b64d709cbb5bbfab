//! OTLP export: batching, bounded queue, retries (issue 5). Placeholder until implemented.
