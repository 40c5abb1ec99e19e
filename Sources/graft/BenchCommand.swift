import ArgumentParser
struct BenchCommand: ParsableCommand { static let configuration = CommandConfiguration(commandName: "bench", abstract: "x"); func run() throws {} }
