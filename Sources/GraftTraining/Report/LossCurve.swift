import Foundation
import GraftFormats

/// The loss curve of a metrics history as a standalone SVG (training loss as a line, validation loss
/// as points), readable in any browser without network access.
public enum LossCurve {
    public static func svg(_ history: [JSONValue], title: String) -> String {
        let train = history.compactMap { r -> (Double, Double)? in
            guard let s = r["step"]?.doubleValue, let l = r["loss"]?.doubleValue else { return nil }; return (s, l)
        }
        let eval = history.compactMap { r -> (Double, Double)? in
            guard let s = r["step"]?.doubleValue, let l = r["eval_loss"]?.doubleValue else { return nil }; return (s, l)
        }
        let w = 640.0, h = 360.0, left = 60.0, right = 20.0, top = 40.0, bottom = 44.0
        let all = train + eval
        let maxStep = max(1, all.map(\.0).max() ?? 1)
        let losses = all.map(\.1).filter(\.isFinite)
        var lo = losses.min() ?? 0, hi = losses.max() ?? 1
        if hi - lo < 1e-9 { hi += 0.5; lo -= 0.5 }
        lo = max(0, lo - 0.05 * (hi - lo))
        func x(_ s: Double) -> Double { left + s / maxStep * (w - left - right) }
        func y(_ l: Double) -> Double { top + (1 - (l - lo) / (hi - lo)) * (h - top - bottom) }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(f(w / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">\(esc(title))</text>\n"
        s += "<line x1=\"\(f(left))\" y1=\"\(f(h - bottom))\" x2=\"\(f(w - right))\" y2=\"\(f(h - bottom))\" stroke=\"#444\"/>\n"
        s += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(h - bottom))\" stroke=\"#444\"/>\n"
        for i in 0...4 {
            let l = lo + (hi - lo) * Double(i) / 4
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(y(l) + 4))\" text-anchor=\"end\">\(String(format: "%.3g", l))</text>\n"
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(l)))\" x2=\"\(f(w - right))\" y2=\"\(f(y(l)))\" stroke=\"#eee\"/>\n"
            let st = maxStep * Double(i) / 4
            s += "<text x=\"\(f(x(st)))\" y=\"\(f(h - bottom + 16))\" text-anchor=\"middle\">\(Int(st.rounded()))</text>\n"
        }
        s += "<text x=\"\(f((left + w - right) / 2))\" y=\"\(f(h - 8))\" text-anchor=\"middle\">step</text>\n"
        s += "<text x=\"14\" y=\"\(f((top + h - bottom) / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(f((top + h - bottom) / 2)))\">loss</text>\n"
        if !train.isEmpty {
            s += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\""
            s += train.filter { $0.1.isFinite }.map { "\(f(x($0.0))),\(f(y($0.1)))" }.joined(separator: " ") + "\"/>\n"
        }
        for (st, l) in eval where l.isFinite { s += "<circle cx=\"\(f(x(st)))\" cy=\"\(f(y(l)))\" r=\"4\" fill=\"#ff7f0e\"/>\n" }
        s += "<rect x=\"\(f(w - right - 150))\" y=\"\(f(top))\" width=\"12\" height=\"3\" fill=\"#1f77b4\"/>"
        s += "<text x=\"\(f(w - right - 132))\" y=\"\(f(top + 5))\">training loss</text>\n"
        if !eval.isEmpty {
            s += "<circle cx=\"\(f(w - right - 144))\" cy=\"\(f(top + 18))\" r=\"4\" fill=\"#ff7f0e\"/>"
            s += "<text x=\"\(f(w - right - 132))\" y=\"\(f(top + 22))\">validation loss</text>\n"
        }
        return s + "</svg>\n"
    }
}
