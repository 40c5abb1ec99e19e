import GraftFormats
import GraftTensor

/// What a method does to the training loop beyond its layers' forward and backward: a regulariser on
/// its own tensors (AdaLoRA's orthogonality), a change to the gradients before the optimizer uses them
/// (ALLoRA's per-row rates), and changes between optimizer steps (AdaLoRA's rank budget). A recipe
/// makes one for the updates it made (`AdapterRecipe.makeTrainingHook`); the trainer calls it at the
/// same points of every step, so a method adds its schedule in its own folder, not in the trainer.
public protocol AdapterTrainingHook: AnyObject {
    /// After the step's backward, before clipping: adds what the method adds to the updates' gradients
    /// and returns its term of the step's loss (0 when it adds none).
    func beforeOptimizerStep() -> Double
    /// After the optimizer's step `step` (0-based, as PEFT's documented loop passes `global_step`), the
    /// step's gradients still held.
    func afterOptimizerStep(_ step: Int)
    /// Elements of the updates' tensors the method switched on since it was last asked (IncreLoRA's new
    /// ranks): the optimizer starts them fresh, as a new parameter group (zero moments, their own age
    /// in the bias correction and the learning-rate schedule).
    func takeActivated() -> [(value: FloatBuffer, ranges: [Range<Int>])]
    /// The hook's own state, for a checkpoint (tensors under names the hook chooses)…
    func state() -> [(String, Tensor)]
    /// …and back, for an exact resume; a missing or misshapen tensor is an error naming it.
    func restore(_ tensors: [String: FloatBuffer], source: String) throws
    /// The adapter as it is saved: the recipe's config and the trainable tensors by saved name, changed
    /// where the method's schedule decided something. `final`: the run's output (AdaLoRA: `rank_pattern`
    /// written and each module cut to the ranks it kept), else a checkpoint (full sizes, to resume into).
    func savedAdapter(config: JSONValue, tensors: [(String, Tensor)], final: Bool) throws -> (config: JSONValue, tensors: [(String, Tensor)])
}

extension AdapterTrainingHook {
    public func beforeOptimizerStep() -> Double { 0 }
    public func afterOptimizerStep(_ step: Int) {}
    public func takeActivated() -> [(value: FloatBuffer, ranges: [Range<Int>])] { [] }
    public func state() -> [(String, Tensor)] { [] }
    public func restore(_ tensors: [String: FloatBuffer], source: String) throws {}
    public func savedAdapter(config: JSONValue, tensors: [(String, Tensor)], final: Bool) throws -> (config: JSONValue, tensors: [(String, Tensor)]) {
        (config, tensors)
    }
}

/// A trained module as a hook sees it: its path in the model and its update.
public typealias TrainedModule = (path: String, update: any LayerUpdate)
