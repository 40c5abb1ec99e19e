import FuzzDriver
import GraftFormats
import GraftTensor

// The safetensors header (JSON, offsets, dtypes, shapes) and every tensor it declares, read as floats.
fuzz { bytes in
    guard let f = try? SafetensorsFile(path: file(named: "model.safetensors", bytes)) else { return }
    for t in f.tensors {
        guard let tensor = try? f.tensor(t.name) else { continue }
        if tensor.dtype.isFloatingPoint { _ = FloatBuffer(tensor).count }
    }
}
