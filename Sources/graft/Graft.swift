import ArgumentParser
import CKernels
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
        subcommands: [InspectCommand.self, MergeCommand.self, FuseCommand.self, TokenizeCommand.self, EmbedCommand.self, LogitsCommand.self, GenerateCommand.self, ChatCommand.self, ConvertCommand.self, TrainCommand.self, EvalCommand.self, DataCommand.self, DemoCommand.self, CompareCommand.self, BenchCommand.self,
                      DoctorCommand.self, TuneCommand.self, ServeCommand.self, GateCommand.self])

    static func main() {
        // First, before any product: OpenBLAS kernels that fit the CPU (may start this program again).
        BLASCore.ensureFastKernels()
        // A write past the file-size limit (ulimit -f) fails with an error naming the file instead of killing.
        graft_ignore_file_size_signal()
        ProcessMemory.keepFreedBlocks()
        // Commands that run products put this CPU's measured kernel choices in force (measured once).
        let arguments = CommandLine.arguments.dropFirst()
        if let command = arguments.first, tunedCommands.contains(command), !arguments.contains(where: { $0 == "-h" || $0 == "--help" }) {
            TuningCache.ensure()
        }
        Self.main(nil)
    }

    static let tunedCommands: Set<String> = ["embed", "logits", "generate", "chat", "train", "gate", "eval", "demo", "bench"]
}
