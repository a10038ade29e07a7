using System.Text.Json.Nodes;

namespace Retrieval.Core.Features;

/// <summary>
/// timestamp_bucket: Keras <c>Discretization(bin_boundaries=np.linspace(min, max, count))</c>. Boundaries and
/// inputs are compared as float32 (as TensorFlow's Bucketize does); the index is the number of boundaries
/// &lt;= the value, so 0..count, and timestamps outside the training range fall into the edge buckets.
/// </summary>
public sealed class TimestampBuckets(float[] boundaries) : Feature<QueryInput>
{
    public const string FeatureName = "timestamp_bucket";

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Index;
    public override int Cardinality => Boundaries.Length + 1;
    public float[] Boundaries { get; } = boundaries;

    public static TimestampBuckets Fit(IEnumerable<QueryInput> rows, int count = 1000)
    {
        if (count < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, "bucket count must be at least 1");
        }
        long min = long.MaxValue, max = long.MinValue;
        foreach (var r in rows)
        {
            min = Math.Min(min, r.Timestamp);
            max = Math.Max(max, r.Timestamp);
        }
        if (min > max)
        {
            throw new ArgumentException("cannot fit timestamp buckets on no rows");
        }
        return new TimestampBuckets(Linspace(min, max, count));
    }

    /// <summary>np.linspace in float64, then cast to float32.</summary>
    internal static float[] Linspace(double start, double stop, int count)
    {
        var b = new float[count];
        if (count == 1)
        {
            b[0] = (float)start;
            return b;
        }
        double step = (stop - start) / (count - 1);
        for (int i = 0; i < count; i++)
        {
            b[i] = (float)(start + i * step);
        }
        b[count - 1] = (float)stop;
        return b;
    }

    /// <summary>Upper bound: the number of boundaries &lt;= the value, compared as float32.</summary>
    public int Bucket(long timestamp) => SortedSearch.CountAtMost<float>(Boundaries, timestamp);

    public override void Encode(QueryInput input, Span<int> indices, Span<float> values) => indices[0] = Bucket(input.Timestamp);

    public override JsonObject Save(string directory) => new()
    {
        ["name"] = Name,
        ["min"] = Boundaries[0],
        ["max"] = Boundaries[^1],
        ["boundaries"] = new JsonArray([.. Boundaries.Select(b => JsonValue.Create(b))]),
    };

    public static TimestampBuckets Load(JsonObject state, string directory) =>
        new([.. FeatureState.Array(state, "boundaries").Select(n => n!.GetValue<float>())]);
}
