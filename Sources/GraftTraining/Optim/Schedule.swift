import Foundation

/// Learning-rate schedules with linear warmup, as transformers' `get_*_schedule_with_warmup`:
/// the factor rises linearly from 0 over `warmup` steps, then stays (constant), falls linearly to 0 at
/// `total` (linear), or follows half a cosine to 0 (cosine).
public enum Schedule: String, Sendable, CaseIterable {
    case constant, linear, cosine

    /// The multiplier of the base learning rate at optimizer step `step` (0-based).
    public func factor(step: Int, warmup: Int, total: Int) -> Double {
        if step < warmup { return Double(step) / Double(max(1, warmup)) }
        switch self {
        case .constant: return 1
        case .linear: return max(0, Double(total - step) / Double(max(1, total - warmup)))
        case .cosine:
            let progress = Double(step - warmup) / Double(max(1, total - warmup))
            return max(0, 0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}
