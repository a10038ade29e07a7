using System.Numerics.Tensors;
using Retrieval.Core.Artifact;
using Retrieval.Core.Features;

namespace Retrieval.Core.Inference;

/// <summary>A dense layer, y = W x + b, with W row-major [Out, In] (PyTorch's layout).</summary>
public sealed record DenseLayer(float[] Weight, float[] Bias, int In, int Out);

/// <summary>
/// One tower in plain C#: each feature's embedding row (Index), masked mean of embedding rows (Bag) or raw
/// values (Numeric), concatenated in feature order, then dense layers with ReLU between them. It computes
/// exactly what the trainer's TorchSharp tower computes, from the published weights.
/// Weight names: <c>embeddings.{feature}</c> [rows, dim], <c>dense.{i}.weight</c> [out, in], <c>dense.{i}.bias</c> [out].
/// </summary>
public sealed class Tower<TInput>
{
    private readonly Feature<TInput>[] _features;
    private readonly float[]?[] _tables;
    private readonly DenseLayer[] _layers;
    private readonly int _maxWidth;
    private readonly int _maxLayer;

    public Tower(IReadOnlyList<Feature<TInput>> features, int embeddingDim, IReadOnlyList<float[]?> tables, IReadOnlyList<DenseLayer> layers,
        bool normalize = false)
    {
        Normalize = normalize;
        if (layers.Count == 0)
        {
            throw new ArgumentException("a tower needs at least one dense layer");
        }
        _features = [.. features];
        _tables = [.. tables];
        _layers = [.. layers];
        EmbeddingDim = embeddingDim;
        InputDim = _features.Sum(f => f.InputWidth(embeddingDim));
        if (_layers[0].In != InputDim)
        {
            throw new InvalidDataException($"the first dense layer takes {_layers[0].In} inputs but the features give {InputDim}");
        }
        for (int i = 1; i < _layers.Length; i++)
        {
            if (_layers[i].In != _layers[i - 1].Out)
            {
                throw new InvalidDataException($"dense layer {i} takes {_layers[i].In} inputs but layer {i - 1} gives {_layers[i - 1].Out}");
            }
        }
        _maxWidth = _features.Max(f => f.Width);
        _maxLayer = _layers.Max(l => Math.Max(l.In, l.Out));
    }

    public IReadOnlyList<Feature<TInput>> Features => _features;
    public int EmbeddingDim { get; }
    public int InputDim { get; }
    public int OutputDim => _layers[^1].Out;

    /// <summary>Whether the output is scaled to unit L2 length (scores are then cosine similarities).</summary>
    public bool Normalize { get; }

    public static string EmbeddingName(string feature) => $"embeddings.{feature}";
    public static string WeightName(int layer) => $"dense.{layer}.weight";
    public static string BiasName(int layer) => $"dense.{layer}.bias";

    /// <summary>Builds the tower from safetensors weights, checking every shape against the features.</summary>
    public static Tower<TInput> FromWeights(IReadOnlyList<Feature<TInput>> features, int embeddingDim,
        IReadOnlyDictionary<string, NamedTensor> weights, string source, bool normalize = false)
    {
        NamedTensor Get(string name) => weights.TryGetValue(name, out var t) ? t
            : throw new InvalidDataException($"{source}: missing tensor '{name}'");
        var tables = features.Select(f => f.Encoding == FeatureEncoding.Numeric ? null
            : Get(EmbeddingName(f.Name)).RequireFloats(f.Cardinality, embeddingDim)).ToList();
        var layers = new List<DenseLayer>();
        for (int i = 0; weights.ContainsKey(WeightName(i)); i++)
        {
            var w = Get(WeightName(i));
            if (w.Shape.Length != 2)
            {
                throw new InvalidDataException($"{source}: '{w.Name}' must be 2-dimensional");
            }
            int outDim = w.Shape[0], inDim = w.Shape[1];
            layers.Add(new DenseLayer(w.RequireFloats(outDim, inDim), Get(BiasName(i)).RequireFloats(outDim), inDim, outDim));
        }
        return new Tower<TInput>(features, embeddingDim, tables, layers, normalize);
    }

    public IEnumerable<NamedTensor> Weights()
    {
        for (int f = 0; f < _features.Length; f++)
        {
            if (_tables[f] is { } table)
            {
                yield return NamedTensor.Of(EmbeddingName(_features[f].Name), table, _features[f].Cardinality, EmbeddingDim);
            }
        }
        for (int i = 0; i < _layers.Length; i++)
        {
            yield return NamedTensor.Of(WeightName(i), _layers[i].Weight, _layers[i].Out, _layers[i].In);
            yield return NamedTensor.Of(BiasName(i), _layers[i].Bias, _layers[i].Out);
        }
    }

    /// <summary>Computes the tower's output for one input; allocates nothing.</summary>
    public void Embed(TInput input, Span<float> output)
    {
        if (output.Length < OutputDim)
        {
            throw new ArgumentException($"output needs {OutputDim} floats, got {output.Length}");
        }
        Span<float> a = stackalloc float[Math.Max(InputDim, _maxLayer)];
        Span<float> b = stackalloc float[Math.Max(InputDim, _maxLayer)];
        Span<int> indices = stackalloc int[_maxWidth];
        Span<float> values = stackalloc float[_maxWidth];
        int at = 0;
        int dim = EmbeddingDim;
        for (int f = 0; f < _features.Length; f++)
        {
            var feature = _features[f];
            feature.Encode(input, indices, values);
            switch (feature.Encoding)
            {
                case FeatureEncoding.Index:
                    _tables[f].AsSpan(indices[0] * dim, dim).CopyTo(a.Slice(at, dim));
                    break;
                case FeatureEncoding.Bag:
                    var sum = a.Slice(at, dim);
                    sum.Clear();
                    int count = 0;
                    for (int i = 0; i < feature.Width; i++)
                    {
                        if (indices[i] != 0)
                        {
                            TensorPrimitives.Add(sum, _tables[f].AsSpan(indices[i] * dim, dim), sum);
                            count++;
                        }
                    }
                    if (count > 0)
                    {
                        TensorPrimitives.Divide(sum, count, sum);
                    }
                    break;
                default:
                    values[..feature.Width].CopyTo(a.Slice(at, feature.Width));
                    break;
            }
            at += feature.InputWidth(dim);
        }
        var x = a[..InputDim];
        for (int l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];
            var y = l == _layers.Length - 1 ? output[..layer.Out] : b[..layer.Out];
            for (int o = 0; o < layer.Out; o++)
            {
                y[o] = TensorPrimitives.Dot(layer.Weight.AsSpan(o * layer.In, layer.In), x) + layer.Bias[o];
            }
            if (l < _layers.Length - 1)
            {
                TensorPrimitives.Max(y, 0f, y); // ReLU between layers
                y.CopyTo(a);
                x = a[..layer.Out];
            }
        }
        if (Normalize)
        {
            var y = output[..OutputDim];
            // As torch.nn.functional.normalize: divide by max(‖y‖, 1e-12).
            TensorPrimitives.Divide(y, MathF.Max(TensorPrimitives.Norm(y), 1e-12f), y);
        }
    }

    public float[] Embed(TInput input)
    {
        var output = new float[OutputDim];
        Embed(input, output);
        return output;
    }
}
