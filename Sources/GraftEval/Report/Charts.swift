import Foundation

/// Small self-contained SVG charts for reports (no scripts, no fonts or files fetched: they render
/// offline in any browser).
public enum Charts {
    /// A colour-blind-safe palette (Okabe–Ito), then greys.
    public static let palette = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#999999", "#666666"]

    public static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    private static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    /// Grouped bars: one group per category (x axis), one bar per series in each group, values in
    /// [yMin, yMax] (nil: no bar). A legend names the series.
    public static func groupedBars(title: String, categories: [String], series: [(name: String, values: [Double?])],
                                   yLabel: String, yMin: Double, yMax: Double, valueFormat: String = "%.1f", colors: [String]? = nil) -> String {
        let colors = colors ?? palette
        let w = 860.0, h = 410.0, left = 60.0, right = 20.0, top = 40.0, bottom = 80.0
        let plotW = w - left - right, plotH = h - top - bottom
        let groupW = plotW / Double(max(1, categories.count))
        let barW = groupW * 0.8 / Double(max(1, series.count))
        func y(_ v: Double) -> Double { top + (1 - (min(max(v, yMin), yMax) - yMin) / (yMax - yMin)) * plotH }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(f(w / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">\(escape(title))</text>\n"
        for i in 0...5 {
            let v = yMin + (yMax - yMin) * Double(i) / 5
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(v)))\" x2=\"\(f(w - right))\" y2=\"\(f(y(v)))\" stroke=\"#eee\"/>\n"
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(y(v) + 4))\" text-anchor=\"end\">\(String(format: "%.0f", v))</text>\n"
        }
        s += "<text x=\"14\" y=\"\(f(top + plotH / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(f(top + plotH / 2)))\">\(escape(yLabel))</text>\n"
        for (ci, c) in categories.enumerated() {
            let gx = left + Double(ci) * groupW + groupW * 0.1
            for (si, sr) in series.enumerated() {
                guard ci < sr.values.count, let v = sr.values[ci], v.isFinite else { continue }
                let x = gx + Double(si) * barW, top = y(v)
                s += "<rect x=\"\(f(x))\" y=\"\(f(top))\" width=\"\(f(max(1, barW - 1)))\" height=\"\(f(y(yMin) - top))\" fill=\"\(colors[si % colors.count])\">"
                s += "<title>\(escape(sr.name)) · \(escape(c)): \(String(format: valueFormat, v))</title></rect>\n"
            }
            s += "<text x=\"\(f(left + (Double(ci) + 0.5) * groupW))\" y=\"\(f(h - bottom + 16))\" text-anchor=\"middle\">\(escape(c))</text>\n"
        }
        s += "<line x1=\"\(f(left))\" y1=\"\(f(y(yMin)))\" x2=\"\(f(w - right))\" y2=\"\(f(y(yMin)))\" stroke=\"#444\"/>\n"
        s += legend(series.map(\.name), colors: colors, x: left, y: h - 38, width: plotW)
        return s + "</svg>\n"
    }

    /// Lines with markers: one per series, over numeric x values.
    public static func lines(title: String, series: [(name: String, points: [(x: Double, y: Double)])], xLabel: String, yLabel: String,
                             colors: [String]? = nil) -> String {
        let colors = colors ?? palette
        let w = 860.0, h = 380.0, left = 60.0, right = 20.0, top = 40.0, bottom = 90.0
        let pts = series.flatMap(\.points)
        var x0 = pts.map(\.x).min() ?? 0, x1 = pts.map(\.x).max() ?? 1
        var y0 = pts.map(\.y).min() ?? 0, y1 = pts.map(\.y).max() ?? 1
        if x1 - x0 < 1e-9 { x0 -= 0.5; x1 += 0.5 }
        if y1 - y0 < 1e-9 { y0 -= 1; y1 += 1 }
        let pad = 0.08 * (y1 - y0); y0 -= pad; y1 += pad
        func x(_ v: Double) -> Double { left + (v - x0) / (x1 - x0) * (w - left - right) }
        func y(_ v: Double) -> Double { top + (1 - (v - y0) / (y1 - y0)) * (h - top - bottom) }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(f(w / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">\(escape(title))</text>\n"
        for i in 0...4 {
            let v = y0 + (y1 - y0) * Double(i) / 4, xv = x0 + (x1 - x0) * Double(i) / 4
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(v)))\" x2=\"\(f(w - right))\" y2=\"\(f(y(v)))\" stroke=\"#eee\"/>\n"
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(y(v) + 4))\" text-anchor=\"end\">\(String(format: "%.1f", v))</text>\n"
            s += "<text x=\"\(f(x(xv)))\" y=\"\(f(h - bottom + 16))\" text-anchor=\"middle\">\(String(format: "%.2g", xv))</text>\n"
        }
        s += "<text x=\"\(f((left + w - right) / 2))\" y=\"\(f(h - bottom + 34))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        s += "<text x=\"14\" y=\"\(f((top + h - bottom) / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(f((top + h - bottom) / 2)))\">\(escape(yLabel))</text>\n"
        for (si, sr) in series.enumerated() {
            let colour = colors[si % colors.count]
            let path = sr.points.sorted { $0.x < $1.x }.map { "\(f(x($0.x))),\(f(y($0.y)))" }.joined(separator: " ")
            s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\"/>\n"
            for p in sr.points {
                s += "<circle cx=\"\(f(x(p.x)))\" cy=\"\(f(y(p.y)))\" r=\"3.5\" fill=\"\(colour)\"><title>\(escape(sr.name)) · \(String(format: "%.3g", p.x)): \(String(format: "%.2f", p.y))</title></circle>\n"
            }
        }
        s += legend(series.map(\.name), colors: colors, x: left, y: h - 22, width: w - left - right)
        return s + "</svg>\n"
    }

    /// Coloured squares and names, wrapped onto a second row when they do not fit.
    private static func legend(_ names: [String], colors: [String], x: Double, y: Double, width: Double) -> String {
        var s = "", cx = x, cy = y
        for (i, n) in names.enumerated() {
            let itemW = 28 + Double(n.count) * 7
            if cx + itemW > x + width && cx > x { cx = x; cy += 18 }
            s += "<rect x=\"\(f(cx))\" y=\"\(f(cy - 10))\" width=\"12\" height=\"12\" fill=\"\(colors[i % colors.count])\"/>"
            s += "<text x=\"\(f(cx + 16))\" y=\"\(f(cy))\">\(escape(n))</text>\n"
            cx += itemW
        }
        return s
    }
}
