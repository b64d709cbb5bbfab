//! OTLP protobuf messages (prost) and encoding (issue 5). Placeholder until implemented.
