using System.Runtime.CompilerServices;
using Retrieval.Core.Artifact;
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
    private TrainingData(MovieLensDataset dataset, Split split, UserHistory history, UserHistory activityLog, QueryInput[] queries,
        IReadOnlyList<Feature<QueryInput>> queryFeatures, IReadOnlyList<Feature<Movie>> candidateFeatures)
    {
        Dataset = dataset;
        Split = split;
        History = history;
        ActivityLog = activityLog;
        QueryFeatures = queryFeatures;
        CandidateFeatures = candidateFeatures;
        MovieRows = dataset.MovieRows();
        Query = [.. queryFeatures.Select(f => new EncodedFeature<QueryInput>(f, queries.Length, r => queries[r]))];
        Candidate = [.. candidateFeatures.Select(f => new EncodedFeature<Movie>(f, dataset.Movies.Count, r => dataset.Movies[r]))];
    }

    public MovieLensDataset Dataset { get; }
    public Split Split { get; }

    /// <summary>The training rows as the artifact ships them: what the query service knows of each user's past.</summary>
    public UserHistory History { get; }

    /// <summary>
    /// Every rating of the data set, train and test: the log a live system keeps, from which a request's history
    /// features (ratings before it, time since the first) are computed. Only times are read from it, never movies.
    /// </summary>
    public UserHistory ActivityLog { get; }
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
        var history = UserHistory.FromRatings(split.Train.Select(r => (ratings.UserIds[r], ratings.MovieIds[r], ratings.Timestamps[r])));
        var activityLog = ActivityLogOf(dataset);
        // Every rating as a request carries it, built once for fitting and for every feature's encoding.
        var queries = new QueryInput[ratings.Count];
        for (int r = 0; r < queries.Length; r++)
        {
            queries[r] = QueryOf(dataset, activityLog, r);
        }
        var trainingQueries = split.Train.Select(r => queries[r]).ToArray();
        var queryFeatures = options.QueryFeatures.Select(n => FeatureCatalog.FitQuery(n, trainingQueries, options.Features)).ToList();
        var candidateFeatures = options.CandidateFeatures.Select(n => FeatureCatalog.FitCandidate(n, dataset.Movies, options.Features)).ToList();
        return new TrainingData(dataset, split, history, activityLog, queries, queryFeatures, candidateFeatures);
    }

    /// <summary>
    /// Every rating's user and time (the movie ids too, as the history type holds them; the features read only times),
    /// built once per data set: an ablation prepares the same ratings for every row, split and validation slice.
    /// </summary>
    public static UserHistory ActivityLogOf(MovieLensDataset dataset) => ActivityLogs.GetValue(dataset, static d =>
    {
        var ratings = d.Ratings;
        return UserHistory.FromRatings(Enumerable.Range(0, ratings.Count).Select(r => (ratings.UserIds[r], ratings.MovieIds[r], ratings.Timestamps[r])));
    });

    private static readonly ConditionalWeakTable<MovieLensDataset, UserHistory> ActivityLogs = new();

    /// <summary>
    /// A rating as a request would carry it: the user's demographics and the user's activity before the rating's
    /// time (from <paramref name="history"/>, normally the whole rating log), as a caller that keeps them passes them.
    /// </summary>
    public static QueryInput QueryOf(MovieLensDataset dataset, UserHistory history, int row)
    {
        string user = dataset.Ratings.UserIds[row];
        long at = dataset.Ratings.Timestamps[row];
        return new QueryInput(user, at) { Profile = dataset.Users.GetValueOrDefault(user), Activity = history.ActivityAt(user, at) };
    }

    public QueryInput QueryOf(int row) => QueryOf(Dataset, ActivityLog, row);

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
