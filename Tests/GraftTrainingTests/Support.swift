import Foundation
import GraftTestSupport
import XCTest

/// A small sentiment set whose label a model can learn in a few steps: clear positive and negative words.
func toySentiment(_ n: Int) -> String {
    let pos = ["great", "wonderful", "excellent", "delightful", "superb", "lovely"], neg = ["awful", "terrible", "boring", "dreadful", "horrible", "dull"]
    let things = ["film", "movie", "plot", "acting", "story", "ending", "cast", "script"]
    return (0..<n).map { i -> String in
        let good = i % 2 == 0
        let w = (good ? pos : neg)[(i / 2) % 6], t = things[(i / 12) % things.count]
        return "{\"text\": \"the \(t) was \(w)\", \"label\": \"\(good ? "positive" : "negative")\"}"
    }.joined(separator: "\n") + "\n"
}
