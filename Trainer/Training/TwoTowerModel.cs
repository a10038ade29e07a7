using System.Diagnostics;
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

    public TwoTowerModel(TrainingData data, TrainingOptions options, Device device)
    {
        _data = data;
        _options = options;
        _device = device;
        random.manual_seed(options.Seed);
        int[] layers = [.. options.HiddenLayers, options.OutputDim];
        _query = new TorchTower<QueryInput>(data.Query, options.EmbeddingDim, layers, device);
        _candidate = new TorchTower<Retrieval.Core.Data.Movie>(data.Candidate, options.EmbeddingDim, layers, device);
        _movieRows = tensor(data.MovieRows.Select(r => (long)r).ToArray(), int64, device);
    }

    public TrainingResult Train(Action<string>? log = null, CancellationToken cancellation = default)
    {
        var train = _data.Split.Train;
        int n = train.Length, batchSize = _options.BatchSize;
        int steps = (n + batchSize - 1) / batchSize;
        var order = new Random(_options.Seed + 1);
        var perm = new long[n];
        using var optimizer = new KerasAdagrad(_query.Parameters().Concat(_candidate.Parameters()), _options.LearningRate);
        // With a catalogue smaller than a batch it is cheaper to run the candidate tower once over all rows and
        // gather; the result and its gradient are the same as running it on the batch's rows.
        bool wholeCatalogue = _candidate.Rows <= batchSize;
        using var allRows = arange(_candidate.Rows, int64, _device);
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
                var q = _query.Forward(rows);
                var movieRows = _movieRows.index_select(0, rows);
                var c = wholeCatalogue ? _candidate.Forward(allRows).index_select(0, movieRows) : _candidate.Forward(movieRows);
                var scores = q.matmul(c.t());
                var loss = nn.functional.cross_entropy(scores, arange(size, int64, _device), reduction: nn.Reduction.Sum);
                optimizer.ZeroGrad();
                loss.backward();
                optimizer.Step();
                lossSum += loss.item<float>();
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
        }
        return new TrainingResult(epochs, total.Elapsed.TotalSeconds, (long)n * _options.Epochs);
    }

    /// <summary>Embeddings of every catalogue row, row-major [rows, outputDim].</summary>
    public float[] CandidateEmbeddings()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return _candidate.Forward(arange(_candidate.Rows, int64, _device)).cpu().data<float>().ToArray();
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
            embedded.data<float>().CopyTo(result, start * _options.OutputDim);
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

    public (Tower<QueryInput> Query, Tower<Retrieval.Core.Data.Movie> Candidate) Export() => (_query.Export(), _candidate.Export());

    public void Dispose()
    {
        _query.Dispose();
        _candidate.Dispose();
        _movieRows.Dispose();
    }
}
