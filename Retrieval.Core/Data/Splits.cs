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
        var order = new int[timestamps.Length];
        for (int i = 0; i < order.Length; i++)
        {
            order[i] = i;
        }
        // Stable: ties keep file order.
        var keys = (long[])timestamps.Clone();
        var stable = order.Select(i => (keys[i], i)).ToArray();
        Array.Sort(stable);
        for (int i = 0; i < order.Length; i++)
        {
            order[i] = stable[i].Item2;
        }
        return order;
    }

    public static SplitKind ParseKind(string text) => text.ToLowerInvariant() switch
    {
        "random" => SplitKind.Random,
        "chronological" or "chrono" or "temporal" => SplitKind.Chronological,
        _ => throw new ArgumentException($"unknown split '{text}': use random or chronological"),
    };

    public static string Name(SplitKind kind) => kind == SplitKind.Random ? "random" : "chronological";
}
