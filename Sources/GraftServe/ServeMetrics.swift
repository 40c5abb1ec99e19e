import Foundation
import Prometheus

/// What `GET /metrics` reports, in Prometheus' text format: requests by endpoint, adapter and status;
/// prompt and generated tokens and time to first token by adapter; queue depth, running requests,
/// reserved KV-cache bytes, token rows and requests per batched pass, adapters in memory.
public final class ServeMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    let queueDepth: Gauge
    let active: Gauge
    let kvReserved: Gauge
    let adaptersLoaded: Gauge
    let batchRows: ValueHistogram
    let batchSequences: ValueHistogram

    public init() {
        queueDepth = registry.makeGauge(descriptor: .init(namespace: "graft", metricName: "queue_depth", unitName: "",
                                                          helpText: "Requests waiting to join the batch"))
        active = registry.makeGauge(descriptor: .init(namespace: "graft", metricName: "running_requests", unitName: "",
                                                      helpText: "Requests in the running batch"))
        kvReserved = registry.makeGauge(descriptor: .init(namespace: "graft", metricName: "kv_cache_reserved", unitName: "bytes",
                                                          helpText: "KV-cache memory reserved by running requests"))
        adaptersLoaded = registry.makeGauge(descriptor: .init(namespace: "graft", metricName: "adapters_loaded", unitName: "",
                                                              helpText: "Adapters in memory"))
        batchRows = registry.makeValueHistogram(descriptor: .init(namespace: "graft", metricName: "batch_rows", unitName: "",
                                                                  helpText: "Token rows per batched forward pass"),
                                                buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048])
        batchSequences = registry.makeValueHistogram(descriptor: .init(namespace: "graft", metricName: "batch_sequences", unitName: "",
                                                                       helpText: "Requests per batched forward pass"),
                                                     buckets: [1, 2, 4, 8, 16, 32, 64, 128])
    }

    func request(endpoint: String, adapter: String, status: Int) {
        registry.makeCounter(descriptor: .init(namespace: "graft", metricName: "requests", unitName: "total", helpText: "HTTP requests served"),
                             labels: [("endpoint", endpoint), ("adapter", adapter), ("status", String(status))]).increment()
    }

    func promptTokens(label: String, count: Int) {
        registry.makeCounter(descriptor: .init(namespace: "graft", metricName: "prompt_tokens", unitName: "total", helpText: "Prompt tokens prefilled"),
                             labels: [("adapter", label)]).increment(by: Int64(count))
    }

    func generatedTokens(label: String) {
        registry.makeCounter(descriptor: .init(namespace: "graft", metricName: "generated_tokens", unitName: "total", helpText: "Tokens generated"),
                             labels: [("adapter", label)]).increment()
    }

    func firstToken(label: String, seconds: Double) {
        registry.makeValueHistogram(descriptor: .init(namespace: "graft", metricName: "time_to_first_token", unitName: "seconds",
                                                      helpText: "From a request's arrival to its first token"),
                                    labels: [("adapter", label)],
                                    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]).record(seconds)
    }

    public func text() -> String { registry.emitToString() }
}
