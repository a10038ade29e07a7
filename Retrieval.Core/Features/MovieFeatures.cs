using System.Text.Json.Nodes;
using Retrieval.Core.Data;

namespace Retrieval.Core.Features;

/// <summary>movie_title: a string lookup over the catalogue's titles (the tutorial's candidate id).</summary>
public sealed class MovieTitleFeature(StringLookup lookup) : Feature<Movie>
{
    public const string FeatureName = "movie_title";
    private const string FileName = "vocab/candidate.movie_title.txt";

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Index;
    public override int Cardinality => Lookup.Cardinality;
    public StringLookup Lookup { get; } = lookup;

    public static MovieTitleFeature Fit(IEnumerable<Movie> catalogue) => new(StringLookup.Fit(catalogue.Select(m => m.Title)));

    public override void Encode(Movie input, Span<int> indices, Span<float> values) => indices[0] = Lookup[input.Title];

    public override JsonObject Save(string directory)
    {
        Lookup.Write(Path.Combine(directory, FileName));
        return new JsonObject { ["name"] = Name, ["vocabularyFile"] = FileName, ["vocabularySize"] = Lookup.Vocabulary.Count };
    }

    public static MovieTitleFeature Load(JsonObject state, string directory) =>
        new(StringLookup.Read(Path.Combine(directory, FeatureState.String(state, "vocabularyFile"))));
}

/// <summary>
/// title_text: the title's tokens (<see cref="TitleTokenizer"/>), embedded and averaged over the non-padding
/// positions (Keras <c>Embedding(mask_zero=True)</c> then <c>GlobalAveragePooling1D</c>). Width is the longest
/// title seen when fitting; longer titles keep their first Width tokens.
/// </summary>
public sealed class TitleTextFeature(TitleTokenizer tokenizer, int width) : Feature<Movie>
{
    public const string FeatureName = "title_text";
    private const string FileName = "vocab/candidate.title_text.txt";

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Bag;
    public override int Cardinality => Tokenizer.Vocabulary.Count;
    public override int Width { get; } = Math.Max(1, width);
    public TitleTokenizer Tokenizer { get; } = tokenizer;

    public static TitleTextFeature Fit(IReadOnlyList<Movie> catalogue, int maxTokens = 10_000)
    {
        var tokenizer = TitleTokenizer.Fit(catalogue.Select(m => m.Title), maxTokens);
        int width = 1;
        foreach (var m in catalogue)
        {
            width = Math.Max(width, TitleTokenizer.Tokens(m.Title).Count);
        }
        return new TitleTextFeature(tokenizer, width);
    }

    public override void Encode(Movie input, Span<int> indices, Span<float> values)
    {
        indices.Clear();
        var ids = Tokenizer.Encode(input.Title);
        for (int i = 0; i < ids.Count && i < Width; i++)
        {
            indices[i] = ids[i];
        }
    }

    public override JsonObject Save(string directory)
    {
        Directory.CreateDirectory(Path.Combine(directory, "vocab"));
        VocabularyFile.Write(Path.Combine(directory, FileName), Tokenizer.Vocabulary);
        return new JsonObject { ["name"] = Name, ["vocabularyFile"] = FileName, ["vocabularySize"] = Tokenizer.Vocabulary.Count, ["width"] = Width };
    }

    public static TitleTextFeature Load(JsonObject state, string directory) =>
        new(new TitleTokenizer(VocabularyFile.Read(Path.Combine(directory, FeatureState.String(state, "vocabularyFile")))),
            FeatureState.Int(state, "width"));
}

/// <summary>genres: the movie's genres (multi-hot), embedded and averaged; a movie without genres takes the OOV row.</summary>
public sealed class GenresFeature(StringLookup lookup, int width) : Feature<Movie>
{
    public const string FeatureName = "genres";

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Bag;
    public override int Cardinality => Lookup.Cardinality + 1;
    public override int Width { get; } = Math.Max(1, width);

    /// <summary>Genre i of the vocabulary is row i + 2: row 0 is padding (the Bag convention), row 1 stands for "no genre known".</summary>
    public StringLookup Lookup { get; } = lookup;

    public static GenresFeature Fit(IReadOnlyList<Movie> catalogue) =>
        new(StringLookup.Fit(catalogue.SelectMany(m => m.Genres)), catalogue.Count == 0 ? 1 : catalogue.Max(m => m.Genres.Count));

    public override void Encode(Movie input, Span<int> indices, Span<float> values)
    {
        indices.Clear();
        int n = 0;
        foreach (var genre in input.Genres)
        {
            if (n < Width && Lookup[genre] is var row and > 0)
            {
                indices[n++] = row + 1;
            }
        }
        if (n == 0)
        {
            indices[0] = 1;
        }
    }

    public override JsonObject Save(string directory) => new()
    {
        ["name"] = Name,
        ["vocabulary"] = new JsonArray([.. Lookup.Vocabulary.Select(v => JsonValue.Create(v))]),
        ["width"] = Width,
    };

    public static GenresFeature Load(JsonObject state, string directory) =>
        new(new StringLookup([.. FeatureState.Array(state, "vocabulary").Select(n => n!.GetValue<string>())]), FeatureState.Int(state, "width"));
}

/// <summary>release_year: the movie's release year in buckets at the catalogue's quantiles; row 0 when the year is unknown.</summary>
public sealed class ReleaseYearFeature(QuantileBuckets buckets) : Feature<Movie>
{
    public const string FeatureName = "release_year";

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Index;
    public override int Cardinality => Buckets.Cardinality;
    public QuantileBuckets Buckets { get; } = buckets;

    public static ReleaseYearFeature Fit(IReadOnlyList<Movie> catalogue, int buckets)
    {
        var years = catalogue.Where(m => m.ReleaseYear.HasValue).Select(m => (double)m.ReleaseYear!.Value).ToList();
        return new(years.Count == 0 ? new QuantileBuckets([]) : QuantileBuckets.Fit(years, buckets));
    }

    public override void Encode(Movie input, Span<int> indices, Span<float> values) =>
        indices[0] = input.ReleaseYear is { } year ? Buckets.Bucket(year) : 0;

    public override JsonObject Save(string directory) => new() { ["name"] = Name, ["boundaries"] = Buckets.ToJson() };

    public static ReleaseYearFeature Load(JsonObject state, string directory) => new(QuantileBuckets.FromJson(FeatureState.Array(state, "boundaries")));
}
