using System.Text.Json.Nodes;

namespace Retrieval.Core.Features;

/// <summary>
/// timestamp_clamped: a chosen count of equal-width buckets over the training period, with times before or after it
/// clamped into the first or last bucket. Unlike timestamp_bucket, whose bucket past the last boundary holds only
/// the training period's final second, a time after training lands on a bucket that training filled.
/// </summary>
public sealed class TimestampClamped(long min, long max, int count) : Feature<QueryInput>
{
    public const string FeatureName = "timestamp_clamped";

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Index;

    /// <summary>The buckets plus row 0, unused but kept so every lookup's row 0 means the same.</summary>
    public override int Cardinality => Count + 1;

    public long Min { get; } = min;
    public long Max { get; } = Math.Max(min, max);
    public int Count { get; } = count >= 1 ? count : throw new ArgumentOutOfRangeException(nameof(count), count, "bucket count must be at least 1");

    public static TimestampClamped Fit(IEnumerable<QueryInput> rows, int count)
    {
        long min = long.MaxValue, max = long.MinValue;
        foreach (var r in rows)
        {
            min = Math.Min(min, r.Timestamp);
            max = Math.Max(max, r.Timestamp);
        }
        return min > max ? throw new ArgumentException("cannot fit timestamp buckets on no rows") : new TimestampClamped(min, max, count);
    }

    public int Bucket(long timestamp)
    {
        if (Max == Min)
        {
            return 1;
        }
        double position = (double)(Math.Clamp(timestamp, Min, Max) - Min) / (Max - Min);
        return 1 + Math.Min(Count - 1, (int)(position * Count));
    }

    public override void Encode(QueryInput input, Span<int> indices, Span<float> values) => indices[0] = Bucket(input.Timestamp);

    public override JsonObject Save(string directory) => new() { ["name"] = Name, ["min"] = Min, ["max"] = Max, ["count"] = Count };

    public static TimestampClamped Load(JsonObject state) =>
        new(state["min"]?.GetValue<long>() ?? throw new InvalidDataException("timestamp_clamped has no 'min' in the manifest"),
            state["max"]?.GetValue<long>() ?? throw new InvalidDataException("timestamp_clamped has no 'max' in the manifest"),
            FeatureState.Int(state, "count"));
}
