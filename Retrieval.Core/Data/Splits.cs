namespace Retrieval.Core.Data;

/// <summary>How ratings are divided into training and test rows.</summary>
public enum SplitKind
{
    /// <summary>Shuffle with a seed, then the first fraction trains (the TFRS tutorial's split).</summary>
    Random,

    /// <summary>Train on the earliest fraction by timestamp, test on the latest.</summary>
    Chronological,
}

/// <summary>Row indices of the training and test parts of a rating table.</summary>
public sealed record Split(SplitKind Kind, int[] Train, int[] Test)
{
    public static Split Create(RatingTable ratings, SplitKind kind, int seed = 42, double trainFraction = 0.8)
    {
        if (trainFraction is <= 0 or >= 1)
        {
            throw new ArgumentOutOfRangeException(nameof(trainFraction), trainFraction, "train fraction must be in (0, 1)");
        }
        int n = ratings.Count;
        int[] order = kind == SplitKind.Random ? Permutation(n, seed) : ChronologicalOrder(ratings.Timestamps);
        int nTrain = (int)Math.Round(n * trainFraction, MidpointRounding.ToEven);
        return new Split(kind, order[..nTrain], order[nTrain..]);
    }

    /// <summary>
    /// This split with a validation slice of its training rows as the test part: a seeded random slice on a random
    /// split, the latest slice of the training period on a chronological one. The original test rows stay unseen.
    /// </summary>
    public Split HoldOut(RatingTable ratings, double fraction, int seed)
    {
        if (fraction is <= 0 or >= 1)
        {
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "validation fraction must be in (0, 1)");
        }
        int[] order;
        if (Kind == SplitKind.Random)
        {
            order = [.. Train];
            new Random(seed).Shuffle(order);
        }
        else
        {
            var byTime = ChronologicalOrder([.. Train.Select(r => ratings.Timestamps[r])]);
            order = [.. byTime.Select(i => Train[i])];
        }
        int keep = Math.Clamp((int)Math.Round(order.Length * (1 - fraction)), 1, order.Length - 1);
        return new Split(Kind, order[..keep], order[keep..]);
    }

    /// <summary>A Fisher–Yates permutation from a seeded generator (stable across .NET versions).</summary>
    public static int[] Permutation(int n, int seed)
    {
        var order = new int[n];
        for (int i = 0; i < n; i++)
        {
            order[i] = i;
        }
        new Random(seed).Shuffle(order);
        return order;
    }

    private static int[] ChronologicalOrder(long[] timestamps)
    {
        // Sorting (timestamp, index) pairs keeps ties in file order.
        var pairs = new (long Timestamp, int Index)[timestamps.Length];
        for (int i = 0; i < pairs.Length; i++)
        {
            pairs[i] = (timestamps[i], i);
        }
        Array.Sort(pairs);
        return [.. pairs.Select(p => p.Index)];
    }

    public static SplitKind ParseKind(string text) => text.ToLowerInvariant() switch
    {
        "random" => SplitKind.Random,
        "chronological" or "chrono" or "temporal" => SplitKind.Chronological,
        _ => throw new ArgumentException($"unknown split '{text}': use random or chronological"),
    };

    public static string Name(SplitKind kind) => kind == SplitKind.Random ? "random" : "chronological";
}
