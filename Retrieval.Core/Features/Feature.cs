using System.Text.Json.Nodes;
using Retrieval.Core.Data;

namespace Retrieval.Core.Features;

/// <summary>What a feature hands its tower.</summary>
public enum FeatureEncoding
{
    /// <summary>One row index into an embedding table (0 = out of vocabulary).</summary>
    Index,

    /// <summary>Raw numbers, concatenated as they are.</summary>
    Numeric,

    /// <summary>Up to <see cref="Feature{TInput}.Width"/> row indices, 0 = padding; the tower takes the masked mean of their embeddings.</summary>
    Bag,
}

/// <summary>
/// The raw context of a query: who asks and when (Unix seconds, UTC), the demographics the caller has (any may be
/// missing), and what the model's history knows of the user's past at that time.
/// </summary>
public readonly record struct QueryInput(string UserId, long Timestamp)
{
    public UserProfile? Profile { get; init; }
    public UserActivity Activity { get; init; }
}

/// <summary>A user's ratings before a query time in the model's history, and when the first of them was (null: none).</summary>
public readonly record struct UserActivity(int PriorRatings, long? FirstRatingAt)
{
    /// <summary>Seconds from the first rating to <paramref name="at"/>; 0 for a user without history.</summary>
    public long SecondsSinceFirstRating(long at) => FirstRatingAt is { } first ? Math.Max(0, at - first) : 0;
}

/// <summary>
/// A feature plugin: fitted by the trainer, saved in the artifact, and the same preprocessing code at training
/// and at serving time. Index and Bag features own an embedding table of <see cref="Cardinality"/> rows.
/// </summary>
public abstract class Feature<TInput>
{
    /// <summary>The name users pass in feature lists and that names the weights (user_id, timestamp_bucket, …).</summary>
    public abstract string Name { get; }

    public abstract FeatureEncoding Encoding { get; }

    /// <summary>Rows of the embedding table (Index and Bag); 0 for Numeric.</summary>
    public virtual int Cardinality => 0;

    /// <summary>Index: 1; Numeric: number of values; Bag: maximum number of indices.</summary>
    public virtual int Width => 1;

    /// <summary>Writes the encoding of one input: <paramref name="indices"/> (Index, Bag) or <paramref name="values"/> (Numeric), each of <see cref="Width"/>.</summary>
    public abstract void Encode(TInput input, Span<int> indices, Span<float> values);

    /// <summary>The fitted state for the manifest; large vocabularies go to files under <paramref name="directory"/>.</summary>
    public abstract JsonObject Save(string directory);

    /// <summary>Width of this feature in the tower's concatenated input.</summary>
    public int InputWidth(int embeddingDim) => Encoding == FeatureEncoding.Numeric ? Width : embeddingDim;
}
