using System.Numerics;

namespace Retrieval.Core.Features;

/// <summary>Binary searches over ascending values: bucket boundaries and rating times.</summary>
public static class SortedSearch
{
    /// <summary>How many values are &lt;= <paramref name="value"/> (the index of the first greater one).</summary>
    public static int CountAtMost<T>(ReadOnlySpan<T> sorted, T value) where T : INumber<T> => Count(sorted, value, inclusive: true);

    /// <summary>How many values are &lt; <paramref name="value"/> (the index of the first one not smaller).</summary>
    public static int CountBelow<T>(ReadOnlySpan<T> sorted, T value) where T : INumber<T> => Count(sorted, value, inclusive: false);

    private static int Count<T>(ReadOnlySpan<T> sorted, T value, bool inclusive) where T : INumber<T>
    {
        int lo = 0, hi = sorted.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (sorted[mid] < value || (inclusive && sorted[mid] == value))
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }
        return lo;
    }
}
