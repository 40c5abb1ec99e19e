/// Element types Graft stores. Float types are computed in f32; integer and bool types are only read
/// (e.g. position ids or masks stored in a checkpoint) and passed through unchanged.
public enum DType: String, Sendable, CaseIterable, Codable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .f64, .f32, .f16, .bf16: return true
        default: return false
        }
    }

    /// The safetensors spelling ("F32", "BF16", …) is the raw value.
    public init?(safetensors name: String) { self.init(rawValue: name) }

    /// Parses the names users and HF configs use: `float32`, `fp16`, `bfloat16`, `torch.float16`, `F32`.
    public init?(userName: String) {
        var s = userName.lowercased()
        if s.hasPrefix("torch.") { s.removeFirst(6) }
        switch s {
        case "float32", "fp32", "f32", "float": self = .f32
        case "float16", "fp16", "f16", "half": self = .f16
        case "bfloat16", "bf16": self = .bf16
        case "float64", "fp64", "f64", "double": self = .f64
        default: return nil
        }
    }

    /// The name HF `config.json` uses in `torch_dtype`.
    public var torchName: String {
        switch self {
        case .f64: return "float64"
        case .f32: return "float32"
        case .f16: return "float16"
        case .bf16: return "bfloat16"
        case .i64: return "int64"
        case .i32: return "int32"
        case .i16: return "int16"
        case .i8: return "int8"
        case .u8: return "uint8"
        case .bool: return "bool"
        }
    }
}
