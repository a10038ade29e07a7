namespace Retrieval.Trainer.Training;

/// <summary>
/// A batch's candidates with duplicates folded: the distinct catalogue rows (the softmax columns), how many
/// examples of the batch each stands for, and each example's column. In-batch softmax over B columns equals
/// softmax over the distinct columns with log(count) added to their logits, so the towers and the loss only
/// do the distinct work (a batch of 2048 MovieLens ratings holds about 800 distinct movies).
/// </summary>
public sealed class InBatchCandidates
{
    private InBatchCandidates(long[] rows, int[] counts, int[] labels)
    {
        Rows = rows;
        Counts = counts;
        Labels = labels;
    }

    /// <summary>Distinct catalogue rows, in order of first appearance.</summary>
    public long[] Rows { get; }

    /// <summary>Examples in the batch whose candidate is each distinct row.</summary>
    public int[] Counts { get; }

    /// <summary>For each example, the index of its candidate in <see cref="Rows"/>.</summary>
    public int[] Labels { get; }

    public static InBatchCandidates Of(ReadOnlySpan<long> examples, int[] movieRowOfExample)
    {
        var column = new Dictionary<int, int>(examples.Length);
        var rows = new List<long>(examples.Length);
        var counts = new List<int>(examples.Length);
        var labels = new int[examples.Length];
        for (int i = 0; i < examples.Length; i++)
        {
            int movie = movieRowOfExample[examples[i]];
            if (!column.TryGetValue(movie, out int j))
            {
                j = rows.Count;
                column[movie] = j;
                rows.Add(movie);
                counts.Add(0);
            }
            counts[j]++;
            labels[i] = j;
        }
        return new InBatchCandidates([.. rows], [.. counts], labels);
    }

    /// <summary>
    /// The full softmax's columns: every catalogue row once, whatever the batch holds, so each example's loss ranks
    /// its movie against the whole catalogue (no sampling, hence nothing for log-Q to correct).
    /// </summary>
    public static InBatchCandidates Catalogue(ReadOnlySpan<long> examples, int[] movieRowOfExample, int catalogueRows)
    {
        var rows = new long[catalogueRows];
        var counts = new int[catalogueRows];
        for (int j = 0; j < catalogueRows; j++)
        {
            rows[j] = j;
            counts[j] = 1;
        }
        var labels = new int[examples.Length];
        for (int i = 0; i < examples.Length; i++)
        {
            labels[i] = movieRowOfExample[examples[i]];
        }
        return new InBatchCandidates(rows, counts, labels);
    }

    /// <summary>The tutorial's logits: every duplicate column counted (log n), no correction.</summary>
    public LogitAdjustments Logits(float scale) => Logits(scale, null, removeAccidentalHits: false);

    /// <summary>
    /// Logits as <c>tfrs.tasks.Retrieval</c> forms them: scores divided by the temperature (<paramref name="scale"/> = 1/T),
    /// minus log of each candidate's sampling probability when <paramref name="logSamplingProbability"/> is given
    /// (the log-Q correction; indexed by catalogue row), and with a row's other copies of its own label removed when
    /// <paramref name="removeAccidentalHits"/> is set. Duplicate columns are folded as log n.
    /// </summary>
    public LogitAdjustments Logits(float scale, float[]? logSamplingProbability, bool removeAccidentalHits)
    {
        int columns = Counts.Length;
        var column = new float[columns];
        var label = new float[columns];
        var target = new float[columns];
        for (int j = 0; j < columns; j++)
        {
            float correction = logSamplingProbability is null ? 0 : -logSamplingProbability[Rows[j]];
            column[j] = MathF.Log(Counts[j]) + correction;
            label[j] = removeAccidentalHits ? correction : column[j];
            target[j] = correction;
        }
        return new LogitAdjustments(scale, column, label, target);
    }
}
