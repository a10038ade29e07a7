using System.Text.Json.Nodes;

namespace Retrieval.Core.Features;

/// <summary>
/// Boundaries at the quantiles of fitted values (duplicates merged), and the bucket of a value: 1 + the number of
/// boundaries &lt;= it, so 1..Length + 1, with row 0 kept for a missing value. Values beyond the fitted range fall
/// into the edge buckets, which training saw.
/// </summary>
public sealed class QuantileBuckets(double[] boundaries)
{
    public double[] Boundaries { get; } = boundaries;

    /// <summary>Rows of an embedding table over these buckets, the missing-value row included.</summary>
    public int Cardinality => Boundaries.Length + 2;

    public static QuantileBuckets Fit(IEnumerable<double> values, int count)
    {
        if (count < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, "bucket count must be at least 1");
        }
        var sorted = values.ToArray();
        if (sorted.Length == 0)
        {
            throw new ArgumentException("cannot fit buckets on no values");
        }
        Array.Sort(sorted);
        var boundaries = new List<double>();
        for (int i = 1; i < count; i++)
        {
            double b = sorted[(int)((long)i * (sorted.Length - 1) / count)];
            // A boundary at the minimum would leave its lower bucket empty; repeated quantiles merge.
            if (b > sorted[0] && (boundaries.Count == 0 || b > boundaries[^1]))
            {
                boundaries.Add(b);
            }
        }
        return new QuantileBuckets([.. boundaries]);
    }

    public int Bucket(double value) => SortedSearch.CountAtMost<double>(Boundaries, value) + 1;

    public JsonArray ToJson() => new([.. Boundaries.Select(b => JsonValue.Create(b))]);

    public static QuantileBuckets FromJson(JsonArray array) => new([.. array.Select(n => n!.GetValue<double>())]);
}
