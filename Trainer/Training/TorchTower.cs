using Retrieval.Core.Features;
using Retrieval.Core.Inference;
using TorchSharp;
using static TorchSharp.torch;

namespace Retrieval.Trainer.Training;

/// <summary>
/// A tower in TorchSharp, built from the same feature plugins the services use: an embedding table per Index
/// or Bag feature (Keras init: uniform ±0.05), raw values for Numeric ones, concatenated, then dense layers
/// (Glorot-uniform weights, zero bias) with ReLU between them. The encoded features of every row live on
/// the device; a forward pass takes row numbers.
/// </summary>
public sealed class TorchTower<TInput> : IDisposable
{
    private readonly List<(Feature<TInput> Feature, Tensor? Table, Tensor Encoded)> _features = [];
    private readonly List<(Tensor Weight, Tensor Bias)> _layers = [];

    private readonly bool _normalize;

    public TorchTower(IReadOnlyList<EncodedFeature<TInput>> encoded, int embeddingDim, IReadOnlyList<int> layerSizes, Device device,
        bool normalize = false)
    {
        _normalize = normalize;
        EmbeddingDim = embeddingDim;
        int inputDim = 0;
        foreach (var e in encoded)
        {
            var f = e.Feature;
            Tensor? table = null;
            Tensor data;
            if (f.Encoding == FeatureEncoding.Numeric)
            {
                data = tensor(e.Values!, [e.Rows, f.Width], float32, device);
            }
            else
            {
                table = empty([f.Cardinality, embeddingDim], float32, device);
                using (no_grad())
                {
                    table.uniform_(-0.05, 0.05);
                }
                table.requires_grad_(true);
                data = tensor(e.Indices!, [e.Rows, f.Width], int64, device);
                if (f.Encoding == FeatureEncoding.Index)
                {
                    data = data.squeeze(1);
                }
            }
            _features.Add((f, table, data));
            inputDim += f.InputWidth(embeddingDim);
        }
        InputDim = inputDim;
        int fanIn = inputDim;
        foreach (var size in layerSizes)
        {
            var weight = empty([size, fanIn], float32, device);
            using (no_grad())
            {
                double limit = Math.Sqrt(6.0 / (fanIn + size)); // glorot_uniform
                weight.uniform_(-limit, limit);
            }
            weight.requires_grad_(true);
            var bias = zeros([size], float32, device).requires_grad_(true);
            _layers.Add((weight, bias));
            fanIn = size;
        }
    }

    public int EmbeddingDim { get; }
    public int InputDim { get; }
    public int Rows => (int)_features[0].Encoded.shape[0];

    public IEnumerable<Tensor> Parameters()
    {
        foreach (var (_, table, _) in _features)
        {
            if (table is not null)
            {
                yield return table;
            }
        }
        foreach (var (w, b) in _layers)
        {
            yield return w;
            yield return b;
        }
    }

    /// <summary>The tower's output for the given rows (int64 tensor on the tower's device).</summary>
    public Tensor Forward(Tensor rows) => Forward([.. _features.Select(f => f.Encoded.index_select(0, rows))]);

    /// <summary>
    /// As <see cref="Forward(Tensor)"/>, but during training each row's user id is replaced by the out-of-vocabulary
    /// row with probability <paramref name="userIdDropout"/>, so that row learns what serves unseen users.
    /// </summary>
    public Tensor Forward(Tensor rows, double userIdDropout)
    {
        if (userIdDropout <= 0)
        {
            return Forward(rows);
        }
        var inputs = new List<Tensor>(_features.Count);
        var keep = rand(rows.shape, device: rows.device).ge(userIdDropout).to_type(ScalarType.Int64);
        foreach (var (feature, _, encoded) in _features)
        {
            var x = encoded.index_select(0, rows);
            if (feature is UserIdFeature)
            {
                x = x * keep;
            }
            inputs.Add(x);
        }
        return Forward(inputs);
    }

    /// <summary>The tower's output for inputs that are not rows of the training data (for example unseen users).</summary>
    public float[] Embed(IReadOnlyList<TInput> inputs)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var device = _layers[0].Weight.device;
        var encoded = _features.Select(f =>
        {
            var e = new EncodedFeature<TInput>(f.Feature, inputs.Count, i => inputs[i]);
            if (f.Feature.Encoding == FeatureEncoding.Numeric)
            {
                return tensor(e.Values!, [inputs.Count, f.Feature.Width], float32, device);
            }
            var indices = tensor(e.Indices!, [inputs.Count, f.Feature.Width], int64, device);
            return f.Feature.Encoding == FeatureEncoding.Index ? indices.squeeze(1) : indices;
        }).ToList();
        return Forward(encoded).cpu().data<float>().ToArray();
    }

    /// <summary>The tower's output given each feature's encoded input ([batch] indices, [batch, width] bags or values).</summary>
    private Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var parts = new List<Tensor>(_features.Count);
        for (int f = 0; f < _features.Count; f++)
        {
            var (feature, table, _) = _features[f];
            var x = inputs[f];
            switch (feature.Encoding)
            {
                case FeatureEncoding.Index:
                    parts.Add(table!.index_select(0, x));
                    break;
                case FeatureEncoding.Bag:
                    // Masked mean over the non-padding positions (Keras mask_zero + GlobalAveragePooling1D).
                    long batch = x.shape[0], width = x.shape[1];
                    var embedded = table!.index_select(0, x.reshape(-1)).reshape(batch, width, EmbeddingDim);
                    var mask = x.ne(0).to_type(ScalarType.Float32).unsqueeze(-1);
                    parts.Add((embedded * mask).sum(1) / mask.sum(1).clamp_min(1));
                    break;
                default:
                    parts.Add(x);
                    break;
            }
        }
        var h = parts.Count == 1 ? parts[0] : cat(parts, 1);
        for (int i = 0; i < _layers.Count; i++)
        {
            h = nn.functional.linear(h, _layers[i].Weight, _layers[i].Bias);
            if (i < _layers.Count - 1)
            {
                h = nn.functional.relu(h);
            }
        }
        return _normalize ? nn.functional.normalize(h, p: 2, dim: 1, eps: 1e-12) : h;
    }

    /// <summary>The same tower in plain C#, for the artifact and the services.</summary>
    public Tower<TInput> Export()
    {
        var tables = _features.Select(f => f.Table is null ? null : f.Table.detach().cpu().data<float>().ToArray()).ToList();
        var layers = _layers.Select(l => new DenseLayer(l.Weight.detach().cpu().data<float>().ToArray(),
            l.Bias.detach().cpu().data<float>().ToArray(), (int)l.Weight.shape[1], (int)l.Weight.shape[0])).ToList();
        return new Tower<TInput>([.. _features.Select(f => f.Feature)], EmbeddingDim, tables, layers, _normalize);
    }

    public void Dispose()
    {
        foreach (var (_, table, encoded) in _features)
        {
            table?.Dispose();
            encoded.Dispose();
        }
        foreach (var (w, b) in _layers)
        {
            w.Dispose();
            b.Dispose();
        }
    }
}
