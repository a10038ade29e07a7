using System.Text.Json.Nodes;

namespace Retrieval.Core.Features;

/// <summary>
/// timestamp_norm: Keras <c>Normalization</c> adapted on the training timestamps, one scalar
/// (t - mean) / sqrt(var) with the population variance, all in float32 as Keras computes it.
/// </summary>
public sealed class TimestampNormalization(float mean, float variance) : Feature<QueryInput>
{
    public const string FeatureName = "timestamp_norm";

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Numeric;
    public float Mean { get; } = mean;
    public float Variance { get; } = variance;

    public static TimestampNormalization Fit(IEnumerable<QueryInput> rows)
    {
        double sum = 0, sumSq = 0;
        long n = 0;
        foreach (var r in rows)
        {
            double t = (float)r.Timestamp;
            sum += t;
            n++;
        }
        if (n == 0)
        {
            throw new ArgumentException("cannot fit timestamp normalisation on no rows");
        }
        double mean = sum / n;
        foreach (var r in rows)
        {
            double d = (float)r.Timestamp - mean;
            sumSq += d * d;
        }
        return new TimestampNormalization((float)mean, (float)(sumSq / n));
    }

    public float Normalize(long timestamp) =>
        ((float)timestamp - Mean) / MathF.Max(MathF.Sqrt(Variance), 1e-7f);

    public override void Encode(QueryInput input, Span<int> indices, Span<float> values) => values[0] = Normalize(input.Timestamp);

    public override JsonObject Save(string directory) => new() { ["name"] = Name, ["mean"] = Mean, ["variance"] = Variance };

    public static TimestampNormalization Load(JsonObject state, string directory) =>
        new(FeatureState.Float(state, "mean"), FeatureState.Float(state, "variance"));
}
