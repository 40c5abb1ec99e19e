#if canImport(Accelerate)
import Accelerate
#else
import CBLAS
#endif

/// Errors from the linear-algebra bridge.
public enum LinalgError: Error, CustomStringConvertible {
    case lapack(routine: String, info: Int32)
    public var description: String {
        switch self {
        case let .lapack(r, info): return "LAPACK \(r) failed (info = \(info))"
        }
    }
}

/// Dense linear algebra on row-major float32 matrices, through BLAS and LAPACK.
public enum Linalg {
    nonisolated(unsafe) private static var singleThreaded = false

    /// Makes BLAS run each call on the calling thread (OpenBLAS; a no-op with Accelerate). For work
    /// that parallelises itself across the cores — bf16 training products and per-head attention —
    /// BLAS's own worker threads would only spin and compete for the same two cores.
    public static func useSingleThreadedBLAS() {
        #if !canImport(Accelerate)
        openblas_set_num_threads(1)
        #endif
        singleThreaded = true
    }

    /// Runs `body` with BLAS single-threaded, then restores the previous setting (for measuring what
    /// training runs without changing what the rest of the process runs).
    public static func withSingleThreadedBLAS<T>(_ body: () throws -> T) rethrows -> T {
        let wasSingle = singleThreaded
        #if !canImport(Accelerate)
        let threads = openblas_get_num_threads()
        defer { openblas_set_num_threads(threads) }
        #endif
        useSingleThreadedBLAS()
        defer { singleThreaded = wasSingle }
        return try body()
    }

    /// Whether callers may run BLAS calls from several threads at once without oversubscribing.
    public static var blasIsSingleThreaded: Bool { singleThreaded }

    /// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major. `transA`: A is stored [k×m]; `transB`: B is [n×k].
    public static func gemm(m: Int, n: Int, k: Int, alpha: Float = 1,
                            a: UnsafePointer<Float>, transA: Bool = false,
                            b: UnsafePointer<Float>, transB: Bool = false,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>) {
        let lda = transA ? m : k, ldb = transB ? k : n
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(n))
    }

    /// General form with explicit leading dimensions (row-major), for strided views such as one
    /// attention head's columns of a [tokens × hidden] matrix.
    public static func gemm(m: Int, n: Int, k: Int, alpha: Float = 1,
                            a: UnsafePointer<Float>, lda: Int, transA: Bool = false,
                            b: UnsafePointer<Float>, ldb: Int, transB: Bool = false,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// C = alpha·A·op(B) + beta·C like `gemm`, split over the cores by column blocks when BLAS is
    /// single-threaded (`useSingleThreadedBLAS`), so large products still use every core.
    public static func gemmParallel(m: Int, n: Int, k: Int, alpha: Float = 1, a: UnsafePointer<Float>,
                                    b: UnsafePointer<Float>, transB: Bool = false, beta: Float = 0, c: UnsafeMutablePointer<Float>) {
        guard singleThreaded, m * n * k >= 1 << 21 else {
            return gemm(m: m, n: n, k: k, alpha: alpha, a: a, b: b, transB: transB, beta: beta, c: c)
        }
        let work = UncheckedSendable((a, b, c))
        parallelFor(count: n, minChunk: 64) { r in
            let (a, b, c) = work.value
            gemm(m: m, n: r.count, k: k, alpha: alpha, a: a, lda: k, b: transB ? b + r.lowerBound * k : b + r.lowerBound,
                 ldb: transB ? k : n, transB: transB, beta: beta, c: c + r.lowerBound, ldc: n)
        }
    }

    /// Convenience: C = A·B for arrays (A [m×k], B [k×n]).
    public static func matmul(_ a: [Float], _ b: [Float], m: Int, k: Int, n: Int,
                              transA: Bool = false, transB: Bool = false) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in c.withUnsafeMutableBufferPointer { c in
            gemm(m: m, n: n, k: k, a: a.baseAddress!, transA: transA, b: b.baseAddress!, transB: transB, c: c.baseAddress!)
        } } }
        return c
    }

    /// Thin SVD of a row-major [m×n] matrix: A = U · diag(S) · Vᵀ with U [m×r], S [r], Vᵀ [r×n],
    /// r = min(m, n), singular values descending. LAPACK `sgesdd` (divide and conquer), as
    /// `torch.linalg.svd(full_matrices=False)` uses on CPU.
    public static func svd(_ a: [Float], rows m: Int, cols n: Int) throws -> (u: [Float], s: [Float], vt: [Float]) {
        // A row-major [m×n] buffer is the column-major [n×m] matrix Aᵀ = V S Uᵀ. LAPACK on it returns
        // "U" = V (col-major n×r = row-major r×n = Vᵀ) and "Vᵀ" = Uᵀ (col-major r×m = row-major m×r = U).
        let r = min(m, n)
        var work = a
        var s = [Float](repeating: 0, count: r)
        var vtOut = [Float](repeating: 0, count: r * n)  // LAPACK's U of Aᵀ
        var uOut = [Float](repeating: 0, count: m * r)   // LAPACK's Vᵀ of Aᵀ
        var jobz = Int8(UInt8(ascii: "S"))
        var M = Int32(n), N = Int32(m), lda = Int32(n), ldu = Int32(n), ldvt = Int32(r)
        var info: Int32 = 0
        var iwork = [Int32](repeating: 0, count: 8 * r)
        var lwork: Int32 = -1
        var query: Float = 0
        sgesdd_(&jobz, &M, &N, &work, &lda, &s, &vtOut, &ldu, &uOut, &ldvt, &query, &lwork, &iwork, &info)
        guard info == 0 else { throw LinalgError.lapack(routine: "sgesdd", info: info) }
        lwork = Int32(query.rounded(.up)) + 1
        var buf = [Float](repeating: 0, count: Int(lwork))
        sgesdd_(&jobz, &M, &N, &work, &lda, &s, &vtOut, &ldu, &uOut, &ldvt, &buf, &lwork, &iwork, &info)
        guard info == 0 else { throw LinalgError.lapack(routine: "sgesdd", info: info) }
        return (uOut, s, vtOut)
    }

    /// Thin SVD in double precision (LAPACK `dgesdd`), laid out as `svd`: U [m×r], S [r], Vᵀ [r×n].
    public static func svd64(_ a: [Double], rows m: Int, cols n: Int) throws -> (u: [Double], s: [Double], vt: [Double]) {
        let r = min(m, n)
        var work = a
        var s = [Double](repeating: 0, count: r)
        var vtOut = [Double](repeating: 0, count: r * n), uOut = [Double](repeating: 0, count: m * r)
        var jobz = Int8(UInt8(ascii: "S"))
        var M = Int32(n), N = Int32(m), lda = Int32(n), ldu = Int32(n), ldvt = Int32(r)
        var info: Int32 = 0, lwork: Int32 = -1, query = 0.0
        var iwork = [Int32](repeating: 0, count: 8 * r)
        dgesdd_(&jobz, &M, &N, &work, &lda, &s, &vtOut, &ldu, &uOut, &ldvt, &query, &lwork, &iwork, &info)
        guard info == 0 else { throw LinalgError.lapack(routine: "dgesdd", info: info) }
        lwork = Int32(query.rounded(.up)) + 1
        var buf = [Double](repeating: 0, count: Int(lwork))
        dgesdd_(&jobz, &M, &N, &work, &lda, &s, &vtOut, &ldu, &uOut, &ldvt, &buf, &lwork, &iwork, &info)
        guard info == 0 else { throw LinalgError.lapack(routine: "dgesdd", info: info) }
        return (uOut, s, vtOut)
    }

    /// The inverse of a square [n×n] matrix in double precision (LU with partial pivoting, LAPACK
    /// `dgetrf` + `dgetri`, as `torch.linalg.inv`); a singular matrix is an error.
    public static func inverse64(_ a: [Double], n: Int) throws -> [Double] {
        // Row-major A is column-major Aᵀ, and (Aᵀ)⁻¹ = (A⁻¹)ᵀ: the result reads back row-major as A⁻¹.
        var m = a, N = Int32(n), info: Int32 = 0
        var ipiv = [Int32](repeating: 0, count: n)
        dgetrf_(&N, &N, &m, &N, &ipiv, &info)
        guard info == 0 else { throw LinalgError.lapack(routine: "dgetrf", info: info) }
        var lwork = Int32(max(1, 64 * n))
        var work = [Double](repeating: 0, count: Int(lwork))
        dgetri_(&N, &m, &N, &ipiv, &work, &lwork, &info)
        guard info == 0 else { throw LinalgError.lapack(routine: "dgetri", info: info) }
        return m
    }

    /// C = A·B in double precision for row-major arrays (A [m×k], B [k×n]).
    public static func matmul64(_ a: [Double], _ b: [Double], m: Int, k: Int, n: Int) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k), b, Int32(n), 0, &c, Int32(n))
        return c
    }
}
