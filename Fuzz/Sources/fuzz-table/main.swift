import Foundation
import FuzzDriver
import GraftData

// Dataset rows: any bytes as a JSON Lines file and as a CSV and TSV file (with and without a header row),
// read as `graft train` and `graft data prepare` read their data.
fuzz { bytes in
    _ = try? Table.read(file(named: "rows.jsonl", bytes))
    let csv = file(named: "rows.csv", bytes)
    _ = try? Table.read(csv, header: true)
    _ = try? Table.read(csv, header: false)
    _ = try? Table.read(file(named: "rows.tsv", bytes))
}
