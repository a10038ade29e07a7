using System.Diagnostics;
using System.Runtime.InteropServices;
using Retrieval.Core.Features;
using Retrieval.Core.Inference;
using Retrieval.Core.Search;
using TorchSharp;
using static TorchSharp.torch;

namespace Retrieval.Trainer.Training;

/// <summary>Per-epoch record of a training run.</summary>
public sealed record EpochResult(int Epoch, double MeanBatchLoss, int Steps, double Seconds, double ExamplesPerSecond);

/// <summary>What a training run measured.</summary>
public sealed record TrainingResult(IReadOnlyList<EpochResult> Epochs, double Seconds, long Examples)
{
    /// <summary>Validation top-100 after each epoch, when a validation slice chose the epoch count.</summary>
    public IReadOnlyList<double> ValidationTop100 { get; init; } = [];

    /// <summary>The epoch count the validation slice chose (the model is that epoch's), or null without validation.</summary>
    public int? ChosenEpochs { get; init; }

    public double ExamplesPerSecond => Examples / Math.Max(Seconds, 1e-9);
}

/// <summary>
/// The two-tower model of the tutorial, trained with TorchSharp: query tower (user id, optional context) and
/// candidate tower (movie title, title text), the <c>tfrs.tasks.Retrieval</c> loss over in-batch scores,
/// Keras Adagrad. Evaluation uses Retrieval.Core's <see cref="FactorizedTopK"/>, the services' search code.
/// </summary>
public sealed class TwoTowerModel : IDisposable
{
    private readonly TrainingData _data;
    private readonly TrainingOptions _options;
    private readonly Device _device;
    private readonly TorchTower<QueryInput> _query;
    private readonly TorchTower<Retrieval.Core.Data.Movie> _candidate;
    private readonly Tensor _movieRows;
    private readonly InBatchSoftmax _loss = new();
    private readonly float[]? _logSamplingProbability;

    public TwoTowerModel(TrainingData data, TrainingOptions options, Device device)
    {
        _data = data;
        _options = options;
        _device = device;
        random.manual_seed(options.Seed);
        int[] layers = [.. options.HiddenLayers, options.OutputDim];
        _query = new TorchTower<QueryInput>(data.Query, options.EmbeddingDim, layers, device, options.Normalize);
        _candidate = new TorchTower<Retrieval.Core.Data.Movie>(data.Candidate, options.EmbeddingDim, layers, device, options.Normalize);
        _movieRows = tensor(data.MovieRows.Select(r => (long)r).ToArray(), int64, device);
        if (options.LogQCorrection)
        {
            // A movie's chance to be an in-batch negative is its share of training rows (unseen movies: half a count).
            var counts = data.TrainingCounts();
            double total = data.Split.Train.Length;
            _logSamplingProbability = [.. counts.Select(c => (float)Math.Log(Math.Max(c, 0.5) / total))];
        }
    }

    /// <summary>
    /// Trains for the configured epochs; after each one, <paramref name="afterEpoch"/> (given the epoch number) may
    /// end training early by returning false.
    /// </summary>
    public TrainingResult Train(Action<string>? log = null, CancellationToken cancellation = default, Func<int, bool>? afterEpoch = null)
    {
        var train = _data.Split.Train;
        int n = train.Length, batchSize = _options.BatchSize;
        int steps = (n + batchSize - 1) / batchSize;
        var order = new Random(_options.Seed + 1);
        var perm = new long[n];
        using var optimizer = new KerasAdagrad(_query.Parameters().Concat(_candidate.Parameters()), _options.LearningRate);
        var epochs = new List<EpochResult>();
        var total = Stopwatch.StartNew();
        var lastReport = Stopwatch.StartNew();
        for (int epoch = 1; epoch <= _options.Epochs; epoch++)
        {
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < n; i++)
            {
                perm[i] = train[i];
            }
            order.Shuffle(perm);
            using var permutation = tensor(perm, int64, _device);
            double lossSum = 0;
            for (int step = 0; step < steps; step++)
            {
                cancellation.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                int start = step * batchSize, size = Math.Min(batchSize, n - start);
                var rows = permutation.narrow(0, start, size);
                var batch = _options.FullSoftmax
                    ? InBatchCandidates.Catalogue(perm.AsSpan(start, size), _data.MovieRows, _candidate.Rows)
                    : InBatchCandidates.Of(perm.AsSpan(start, size), _data.MovieRows);
                var q = _query.Forward(rows, _options.UserIdDropout);
                var c = _candidate.Forward(tensor(batch.Rows, int64, _device));
                optimizer.ZeroGrad();
                lossSum += RetrievalLossBackward(q, c, batch);
                optimizer.Step();
                if (log is not null && (lastReport.Elapsed.TotalSeconds >= 2 || step == steps - 1))
                {
                    double seen = (double)(step + 1) * batchSize;
                    log($"epoch {epoch}/{_options.Epochs}  step {step + 1}/{steps}  loss {lossSum / (step + 1):F1}  " +
                        $"{Math.Min(seen, n) / clock.Elapsed.TotalSeconds:N0} examples/s");
                    lastReport.Restart();
                }
            }
            double seconds = clock.Elapsed.TotalSeconds;
            epochs.Add(new EpochResult(epoch, lossSum / steps, steps, seconds, n / seconds));
            if (afterEpoch is not null && !afterEpoch(epoch))
            {
                break;
            }
        }
        return new TrainingResult(epochs, total.Elapsed.TotalSeconds, (long)n * epochs.Count);
    }

    /// <summary>
    /// The retrieval loss over the batch's in-batch logits; back-propagates it and returns its value. On the CPU
    /// the fused <see cref="InBatchSoftmax"/> kernel computes the loss and dL/dQ, dL/dC, and the towers are
    /// back-propagated from those; elsewhere TorchSharp's own cross-entropy computes the same loss.
    /// </summary>
    private double RetrievalLossBackward(Tensor q, Tensor c, InBatchCandidates batch)
    {
        var logits = batch.Logits((float)(1 / _options.Temperature), _logSamplingProbability, _options.RemoveAccidentalHits);
        if (_device.type != DeviceType.CPU)
        {
            return RetrievalLossBackwardTorch(q, c, batch, logits);
        }
        int dim = (int)q.shape[1];
        var gradQ = new float[batch.Labels.Length * dim];
        var gradC = new float[batch.Rows.Length * dim];
        double value = _loss.LossAndGradients(Floats(q), Floats(c), batch.Labels, dim, logits, gradQ, gradC, get_num_threads());
        // d/dθ of Σ q·gradQ + Σ c·gradC is exactly the loss gradient flowing into the towers.
        var surrogate = (q * tensor(gradQ, [batch.Labels.Length, dim], float32, _device)).sum()
            + (c * tensor(gradC, [batch.Rows.Length, dim], float32, _device)).sum();
        surrogate.backward();
        return value;
    }

    /// <summary>A contiguous CPU tensor's values, without the element-by-element copy of <c>data&lt;float&gt;()</c>.</summary>
    private static ReadOnlySpan<float> Floats(Tensor t) => MemoryMarshal.Cast<byte, float>(t.detach().contiguous().bytes);

    private double RetrievalLossBackwardTorch(Tensor q, Tensor c, InBatchCandidates batch, LogitAdjustments adjust)
    {
        var labels = tensor(batch.Labels.Select(l => (long)l).ToArray(), int64, _device);
        var columnBias = tensor(adjust.ColumnBias, float32, _device);
        var labelDelta = tensor(adjust.LabelColumnBias.Zip(adjust.ColumnBias, (a, b) => a - b).ToArray(), float32, _device);
        var logits = q.matmul(c.t()) * adjust.Scale + columnBias;
        logits = logits.scatter_add(1, labels.unsqueeze(1), labelDelta.index_select(0, labels).unsqueeze(1));
        var loss = nn.functional.cross_entropy(logits, labels, reduction: nn.Reduction.Sum);
        loss.backward();
        // Cross-entropy's target is the label column's logit; the retrieval target differs by a constant.
        double offset = batch.Labels.Sum(l => (double)adjust.LabelColumnBias[l] - adjust.TargetBias[l]);
        return loss.item<float>() + offset;
    }

    /// <summary>A copy of every weight, to return to with <see cref="Restore"/>.</summary>
    public IReadOnlyList<Tensor> Snapshot()
    {
        using var _ = no_grad();
        return [.. _query.Parameters().Concat(_candidate.Parameters()).Select(p => p.detach().clone())];
    }

    public void Restore(IReadOnlyList<Tensor> snapshot)
    {
        using var _ = no_grad();
        foreach (var (parameter, saved) in _query.Parameters().Concat(_candidate.Parameters()).Zip(snapshot))
        {
            parameter.copy_(saved);
        }
    }

    /// <summary>Embeddings of every catalogue row, row-major [rows, outputDim].</summary>
    public float[] CandidateEmbeddings()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return Floats(_candidate.Forward(arange(_candidate.Rows, int64, _device)).cpu()).ToArray();
    }

    /// <summary>Query embeddings of the given rating rows, row-major [rows, outputDim].</summary>
    public float[] QueryEmbeddings(ReadOnlySpan<int> ratingRows)
    {
        using var _ = no_grad();
        var result = new float[(long)ratingRows.Length * _options.OutputDim];
        const int Chunk = 16_384;
        for (int start = 0; start < ratingRows.Length; start += Chunk)
        {
            using var scope = NewDisposeScope();
            var chunk = ratingRows.Slice(start, Math.Min(Chunk, ratingRows.Length - start));
            var rows = new long[chunk.Length];
            for (int i = 0; i < rows.Length; i++)
            {
                rows[i] = chunk[i];
            }
            var embedded = _query.Forward(tensor(rows, int64, _device)).cpu();
            Floats(embedded).CopyTo(result.AsSpan(start * _options.OutputDim));
        }
        return result;
    }

    /// <summary>FactorizedTopK accuracy of the given rating rows against the whole catalogue.</summary>
    public TopKAccuracy Evaluate(int[] ratingRows)
    {
        using var candidates = new CandidateMatrix(CandidateEmbeddings(), _options.OutputDim,
            [.. _data.Dataset.Movies.Select(m => m.Id)]);
        var queries = QueryEmbeddings(ratingRows);
        var truth = ratingRows.Select(r => _data.MovieRows[r]).ToArray();
        return FactorizedTopK.Evaluate(candidates, queries, truth);
    }

    /// <summary>Query embeddings computed by the TorchSharp tower for arbitrary inputs, row-major.</summary>
    public float[] EmbedQueries(IReadOnlyList<QueryInput> inputs) => _query.Embed(inputs);

    /// <summary>Candidate embeddings computed by the TorchSharp tower for arbitrary movies, row-major.</summary>
    public float[] EmbedCandidates(IReadOnlyList<Retrieval.Core.Data.Movie> movies) => _candidate.Embed(movies);

    public (Tower<QueryInput> Query, Tower<Retrieval.Core.Data.Movie> Candidate) Export() => (_query.Export(), _candidate.Export());

    public void Dispose()
    {
        _query.Dispose();
        _candidate.Dispose();
        _movieRows.Dispose();
    }
}
