import ArgumentParser
import GraftTensor

@main
struct Graft: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "graft",
        abstract: "Adapt one pretrained transformer to many tasks: merge, fuse and inspect models, natively on CPU.",
        discussion: """
        Reads and writes the formats the field uses: safetensors and HF config.json folders, HF PEFT
        adapter folders, mergekit YAML.

        Examples:
          graft inspect path/to/model
          graft merge config.yml out/          (a mergekit config)
          graft fuse --model base/ --adapter lora/ fused/
        """,
        version: "0.1.0",
        subcommands: [InspectCommand.self, MergeCommand.self, FuseCommand.self, TokenizeCommand.self, EmbedCommand.self, LogitsCommand.self, GenerateCommand.self, ChatCommand.self, ConvertCommand.self, TrainCommand.self, EvalCommand.self, DataCommand.self, DemoCommand.self, BenchCommand.self])

    static func main() {
        ProcessMemory.keepFreedBlocks()
        Self.main(nil)
    }
}
