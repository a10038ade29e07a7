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
