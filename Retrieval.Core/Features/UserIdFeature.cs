using System.Text.Json.Nodes;

namespace Retrieval.Core.Features;

/// <summary>user_id: a string lookup over the training users; unknown users share row 0.</summary>
public sealed class UserIdFeature(StringLookup lookup) : Feature<QueryInput>
{
    public const string FeatureName = "user_id";
    private const string FileName = "vocab/query.user_id.txt";

    public override string Name => FeatureName;
    public override FeatureEncoding Encoding => FeatureEncoding.Index;
    public override int Cardinality => Lookup.Cardinality;
    public StringLookup Lookup { get; } = lookup;

    public static UserIdFeature Fit(IEnumerable<QueryInput> rows) => new(StringLookup.Fit(rows.Select(r => r.UserId)));

    public override void Encode(QueryInput input, Span<int> indices, Span<float> values) => indices[0] = Lookup[input.UserId];

    public override JsonObject Save(string directory)
    {
        Lookup.Write(Path.Combine(directory, FileName));
        return new JsonObject { ["name"] = Name, ["vocabularyFile"] = FileName, ["vocabularySize"] = Lookup.Vocabulary.Count };
    }

    public static UserIdFeature Load(JsonObject state, string directory) =>
        new(StringLookup.Read(Path.Combine(directory, FeatureState.String(state, "vocabularyFile"))));
}
