using Retrieval.Core.Data;
using Retrieval.Core.Features;

namespace Retrieval.Trainer.Training;

/// <summary>One feature's encoding of every row: indices (Index, Bag) or values (Numeric), <c>Width</c> per row.</summary>
public sealed class EncodedFeature<TInput>
{
    public EncodedFeature(Feature<TInput> feature, int rows, Func<int, TInput> input)
    {
        Feature = feature;
        Rows = rows;
        int w = feature.Width;
        if (feature.Encoding == FeatureEncoding.Numeric)
        {
            Values = new float[(long)rows * w];
            Span<int> unused = stackalloc int[w];
            for (int r = 0; r < rows; r++)
            {
                feature.Encode(input(r), unused, Values.AsSpan(r * w, w));
            }
        }
        else
        {
            Indices = new long[(long)rows * w];
            var indices = new int[w];
            Span<float> unused = stackalloc float[Math.Max(1, w)];
            for (int r = 0; r < rows; r++)
            {
                feature.Encode(input(r), indices, unused);
                for (int i = 0; i < w; i++)
                {
                    Indices[r * w + i] = indices[i];
                }
            }
        }
    }

    public Feature<TInput> Feature { get; }
    public int Rows { get; }
    public long[]? Indices { get; }
    public float[]? Values { get; }
}

/// <summary>
/// A data set prepared for training: the split, the feature plugins fitted on the training rows (candidate
/// features on the catalogue), and every rating's and every movie's features encoded by those same plugins.
/// </summary>
public sealed class TrainingData
{
    private TrainingData(MovieLensDataset dataset, Split split, IReadOnlyList<Feature<QueryInput>> queryFeatures,
        IReadOnlyList<Feature<Movie>> candidateFeatures)
    {
        Dataset = dataset;
        Split = split;
        QueryFeatures = queryFeatures;
        CandidateFeatures = candidateFeatures;
        MovieRows = dataset.MovieRows();
        var ratings = dataset.Ratings;
        Query = [.. queryFeatures.Select(f => new EncodedFeature<QueryInput>(f, ratings.Count, r => new QueryInput(ratings.UserIds[r], ratings.Timestamps[r])))];
        Candidate = [.. candidateFeatures.Select(f => new EncodedFeature<Movie>(f, dataset.Movies.Count, r => dataset.Movies[r]))];
    }

    public MovieLensDataset Dataset { get; }
    public Split Split { get; }
    public IReadOnlyList<Feature<QueryInput>> QueryFeatures { get; }
    public IReadOnlyList<Feature<Movie>> CandidateFeatures { get; }

    /// <summary>Catalogue row of each rating's movie.</summary>
    public int[] MovieRows { get; }

    /// <summary>Query features of every rating (train and test rows alike).</summary>
    public IReadOnlyList<EncodedFeature<QueryInput>> Query { get; }

    /// <summary>Candidate features of every catalogue row.</summary>
    public IReadOnlyList<EncodedFeature<Movie>> Candidate { get; }

    public static TrainingData Prepare(MovieLensDataset dataset, TrainingOptions options, Split? split = null)
    {
        split ??= Split.Create(dataset.Ratings, options.Split, options.SplitSeed, options.TrainFraction);
        var ratings = dataset.Ratings;
        var trainingQueries = split.Train.Select(r => new QueryInput(ratings.UserIds[r], ratings.Timestamps[r])).ToArray();
        var queryFeatures = options.QueryFeatures.Select(n => FeatureCatalog.FitQuery(n, trainingQueries, options.Features)).ToList();
        var candidateFeatures = options.CandidateFeatures.Select(n => FeatureCatalog.FitCandidate(n, dataset.Movies, options.Features)).ToList();
        return new TrainingData(dataset, split, queryFeatures, candidateFeatures);
    }

    /// <summary>Movie ids by their count in the training rows, most rated first (ties by catalogue order).</summary>
    public int[] PopularMovieIds(int count)
    {
        var counts = TrainingCounts();
        var rows = Enumerable.Range(0, counts.Length).OrderByDescending(r => counts[r]).ThenBy(r => r).Take(count);
        return [.. rows.Select(r => Dataset.Movies[r].Id)];
    }

    /// <summary>How often each catalogue row appears in the training rows.</summary>
    public int[] TrainingCounts()
    {
        var counts = new int[Dataset.Movies.Count];
        foreach (var r in Split.Train)
        {
            counts[MovieRows[r]]++;
        }
        return counts;
    }
}
